//! `check-config`'s checks that need more than the config text: the model bundle loads and
//! embeds every prompt, and with `--probe` the camera opens, the broker accepts a connection, the
//! GPIO lines exist, the runtime asked for is usable, the snapshot folder is writable.
//!
//! It sits above the components it exercises (sources, sinks, the model), so that the config
//! stays plain data that imports none of them (Vector's `validate` vs `validate --no-environment`
//! split, STYLE.md 6).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::DaemonError;
use crate::daemon::labels::{build_matcher, has_exemplars};
use crate::model::{Bundle, ImageEncoder, ModelError, Runtime};
use crate::prompts::{PromptEmbedder, PromptError};

/// Why the config's model cannot serve it. Each names the config file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ModelCheckError {
    /// `model.bundle` does not load.
    #[error("{}: model.bundle: {error}", file.display())]
    Bundle {
        /// The config file.
        file: PathBuf,
        /// What is wrong with the bundle (its message names the bundle's file).
        error: Box<ModelError>,
    },
    /// The bundle's prompt embeddings or text tower do not load.
    #[error("{}: model.bundle: {error}", file.display())]
    Prompts {
        /// The config file.
        file: PathBuf,
        /// Why.
        error: Box<PromptError>,
    },
    /// The vocabulary, a negative or an example image cannot be used (the message names the
    /// config file and the key).
    #[error(transparent)]
    Matcher(Box<DaemonError>),
    /// A prompt or background text cannot be embedded (no text tower and no precomputed
    /// embedding for it, or the text tower failed).
    #[error("{}: prompt {text:?}: {error}", file.display())]
    Prompt {
        /// The config file.
        file: PathBuf,
        /// The text.
        text: String,
        /// Why.
        error: Box<PromptError>,
    },
}

/// Loads `model.bundle` and embeds every prompt and background text with it (from the bundle's
/// precomputed embeddings or its text tower), then builds the matcher the daemon would: the
/// vocabulary, every negative and every example image (through the image tower, loaded only
/// when there are examples). Returns how many texts were checked.
pub fn check_model(config: &Config) -> Result<usize, ModelCheckError> {
    let file = || {
        config
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from("<memory>"))
    };
    let bundle = Bundle::load(&config.model.bundle).map_err(|error| ModelCheckError::Bundle {
        file: file(),
        error: Box::new(error),
    })?;
    let mut embedder =
        PromptEmbedder::new(&bundle, &[]).map_err(|error| ModelCheckError::Prompts {
            file: file(),
            error: Box::new(error),
        })?;
    let texts = config
        .prompts
        .iter()
        .chain(config.cameras.iter().flat_map(|c| &c.prompts))
        .flat_map(|p| p.texts.iter().chain(&p.negatives))
        .chain(&config.matcher.background);
    let mut checked = 0;
    for t in texts {
        embedder.embed(t).map_err(|error| ModelCheckError::Prompt {
            file: file(),
            text: t.clone(),
            error: Box::new(error),
        })?;
        checked += 1;
    }
    let encoder = if (0..config.cameras.len()).any(|i| has_exemplars(&config.for_camera(i))) {
        crate::model::timing::set_enabled(config.model.precision_timing);
        Some(
            ImageEncoder::load_for(&bundle, config.model.precision, Runtime::Cpu).map_err(
                |error| ModelCheckError::Bundle {
                    file: file(),
                    error: Box::new(error),
                },
            )?,
        )
    } else {
        None
    };
    // Each camera's matcher, as the daemon builds it (its labels: the global ones it keeps and
    // its own).
    for i in 0..config.cameras.len() {
        build_matcher(&config.for_camera(i), &bundle, encoder.as_ref())
            .map_err(|error| ModelCheckError::Matcher(Box::new(error)))?;
    }
    Ok(checked)
}

/// One check of [`probe`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// The camera source could not be opened or delivered no frame.
    #[error("camera: {0}")]
    Camera(#[from] crate::source::SourceError),
    /// The broker could not be reached.
    #[error("mqtt: {0}")]
    Mqtt(#[from] crate::sink::mqtt::MqttError),
    /// A GPIO line could not be found.
    #[error("gpio: {0}")]
    Gpio(#[from] crate::sink::gpio::GpioError),
    /// The snapshot folder cannot be written (the message starts with `snapshots.dir`).
    #[error("{0}")]
    Snapshots(#[from] crate::snapshot::SnapshotError),
    /// `model.runtime = "cuda"`, and CUDA is not usable here.
    #[error("model.runtime: {0}")]
    Runtime(ModelError),
    /// The model bundle folder is missing.
    #[error("model: bundle folder {path} is missing or unreadable: {source}")]
    Bundle {
        /// The bundle folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The failed checks of [`probe`], one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ProbeError {
    /// Every check that failed.
    pub failures: Vec<ProbeFailure>,
}

/// Checks the parts of a config that need the environment, all of them: the model bundle folder
/// exists, `model.runtime` is usable (CUDA loads, for `"cuda"`), the camera opens and delivers
/// one frame within `timeout`, the broker accepts a connection, the GPIO lines exist (they are
/// looked up, not requested, so nothing is driven), the snapshot folder could be created and
/// written (nothing is created: the probe may run as another user than the daemon).
/// Returns one line per successful check.
pub fn probe(config: &Config, timeout: Duration) -> Result<Vec<String>, ProbeError> {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    match std::fs::read_dir(&config.model.bundle) {
        Ok(_) => ok.push(format!("model: bundle {}", config.model.bundle.display())),
        Err(source) => failures.push(ProbeFailure::Bundle {
            path: config.model.bundle.clone(),
            source,
        }),
    }
    // Where the image tower would run (loads the CUDA driver and libraries, creates nothing).
    match crate::model::device::select(config.model.runtime) {
        Ok(s) => ok.push(format!(
            "model.runtime: {} -> {} ({})",
            config.model.runtime, s.device, s.reason
        )),
        Err(e) => failures.push(ProbeFailure::Runtime(e)),
    }
    match crate::source::probe(config.camera(), timeout) {
        Ok(line) => ok.push(format!("camera: {line}")),
        Err(e) => failures.push(e.into()),
    }
    if let Some(m) = &config.mqtt {
        match crate::sink::mqtt::probe(m, &config.camera().name, timeout) {
            Ok(line) => ok.push(format!("mqtt: {line}")),
            Err(e) => failures.push(e.into()),
        }
    }
    if let Some(g) = &config.gpio {
        match crate::sink::gpio::probe(g) {
            Ok(lines) => ok.extend(lines.into_iter().map(|l| format!("gpio: {l}"))),
            Err(e) => failures.push(e.into()),
        }
    }
    if config.snapshots.enabled {
        let root =
            crate::snapshot::folder(&config.snapshots).map(|d| d.join(&config.camera().name));
        match root.and_then(|r| crate::snapshot::probe_folder(&r).map(|()| r)) {
            Ok(r) => ok.push(format!(
                "snapshots: {} is writable{}",
                r.display(),
                if config.snapshots.dir.is_none() && std::env::var_os("STATE_DIRECTORY").is_none() {
                    " (the systemd unit writes under its $STATE_DIRECTORY, /var/lib/edgeclip)"
                } else {
                    ""
                }
            )),
            Err(e) => failures.push(e.into()),
        }
    }
    if failures.is_empty() {
        Ok(ok)
    } else {
        Err(ProbeError { failures })
    }
}

//! `edgeclip exemplar add`: copies example images of a label into the config's exemplar folder
//! and shows what they do to the label's score, before and after.
//!
//! The folder is `matcher.exemplars_dir/LABEL/` (`LABEL/negative/` with `--negative`), which
//! the daemon reads at start without the config naming each file. Every image is checked (it
//! decodes, the label exists) before anything is copied.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{Config, ConfigError};
use crate::daemon::DaemonError;
use crate::daemon::labels::{build_matcher, label_dir};
use crate::matcher::{Matcher, Scores};
use crate::model::{Bundle, ImageEncoder, ModelError, Runtime};
use crate::preprocess::{Preprocessor, Spec};
use crate::prompts::PromptEmbeddings;
use crate::prompts::images::{ExemplarEmbedder, ExemplarError};

/// Why `exemplar add` stopped (nothing was copied unless the error says so).
#[derive(Debug, thiserror::Error)]
pub enum ExemplarCmdError {
    /// The config does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No such label in the config.
    #[error("{}: no label {label:?} in [[prompts]] (the labels: {})", file.display(), known.join(", "))]
    UnknownLabel {
        /// The config file.
        file: PathBuf,
        /// The label asked for.
        label: String,
        /// The config's labels.
        known: Vec<String>,
    },
    /// An image does not load (the message names it).
    #[error(transparent)]
    Image(#[from] ExemplarError),
    /// The bundle or the image tower does not load, or the tower failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The matcher cannot be built (vocabulary, other examples).
    #[error(transparent)]
    Matcher(#[from] DaemonError),
    /// An image could not be copied.
    #[error("copying {} to {}: {source}", from.display(), to.display())]
    Copy {
        /// The image.
        from: PathBuf,
        /// Where it was going.
        to: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One image's effect on the label.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEffect {
    /// Where the image now is.
    pub path: PathBuf,
    /// The label's (score, probability) on it before it was added.
    pub before: (f32, f32),
    /// The same after.
    pub after: (f32, f32),
    /// The label's strongest competitor on it after, and its score.
    pub runner_up: Option<(String, f32)>,
}

/// What `exemplar add` did.
#[derive(Debug, Clone, PartialEq)]
pub struct AddReport {
    /// The label.
    pub label: String,
    /// Whether the images were added as negative examples.
    pub negative: bool,
    /// The folder they were copied into.
    pub dir: PathBuf,
    /// Per image.
    pub images: Vec<ImageEffect>,
}

impl fmt::Display for AddReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.negative {
            "negative examples"
        } else {
            "examples"
        };
        writeln!(
            f,
            "{} image(s) added to {} as {kind} of {:?}",
            self.images.len(),
            self.dir.display(),
            self.label
        )?;
        writeln!(
            f,
            "{:<32} {:>15} {:>15}  runner-up",
            "image", "score", "prob"
        )?;
        for i in &self.images {
            let name = i.path.file_name().unwrap_or_default().to_string_lossy();
            writeln!(
                f,
                "{:<32} {:>6.3} -> {:<6.3} {:>6.3} -> {:<6.3} {}",
                name,
                i.before.0,
                i.after.0,
                i.before.1,
                i.after.1,
                i.runner_up
                    .as_ref()
                    .map(|(n, s)| format!("{n} ({s:.3})"))
                    .unwrap_or_else(|| "-".into())
            )?;
        }
        Ok(())
    }
}

/// The label's (score, probability) on an image, and its runner-up (name, score).
type Effect = ((f32, f32), Option<(String, f32)>);

/// Scores images with a matcher: the label's (score, prob) and its runner-up on each.
fn score_all(matcher: &Matcher, label: usize, embeddings: &[Vec<f32>]) -> Vec<Effect> {
    let mut s = Scores::default();
    embeddings
        .iter()
        .map(|e| {
            matcher.score(e, &mut s);
            let runner_up =
                s.runner_up[label].map(|r| (matcher.rows()[r.row].name.clone(), r.score));
            ((s.cos[label], s.prob[label]), runner_up)
        })
        .collect()
}

/// Where `image` goes in `dir`: its own name, or with its content hash added when another file
/// of that name is there already.
fn destination(dir: &Path, image: &Path, bytes: &[u8]) -> PathBuf {
    let name = image.file_name().unwrap_or_default();
    let plain = dir.join(name);
    match std::fs::read(&plain) {
        Err(_) => plain,
        Ok(existing) if existing == bytes => plain,
        Ok(_) => {
            let hash = format!("{:x}", Sha256::digest(bytes));
            let stem = image.file_stem().unwrap_or_default().to_string_lossy();
            let ext = image.extension().unwrap_or_default().to_string_lossy();
            dir.join(format!("{stem}-{}.{ext}", &hash[..12]))
        }
    }
}

/// Copies `images` into the label's exemplar folder and reports the label's score on each,
/// before and after.
pub fn add(
    config_path: &Path,
    label: &str,
    negative: bool,
    images: &[PathBuf],
) -> Result<AddReport, ExemplarCmdError> {
    let config = Config::from_file(config_path)?;
    let Some(index) = config.prompts.iter().position(|p| p.label == label) else {
        return Err(ExemplarCmdError::UnknownLabel {
            file: config_path.into(),
            label: label.into(),
            known: config.prompts.iter().map(|p| p.label.clone()).collect(),
        });
    };
    let bundle = Bundle::load(&config.model.bundle)?;
    crate::model::timing::set_enabled(config.model.precision_timing);
    let encoder = ImageEncoder::load_for(&bundle, config.model.precision, Runtime::Cpu)?;
    // The daemon's own path for example images: the bundle's preprocessing, then the tower.
    let mut embedder = ExemplarEmbedder::new(
        &encoder,
        Preprocessor::new(Spec::from(&bundle.manifest.image)),
        PromptEmbeddings::empty(bundle.fingerprint(), bundle.embed_dim()),
    );
    // Every image decodes and embeds before anything is copied.
    let mut embeddings = Vec::with_capacity(images.len());
    for path in images {
        embeddings.push(embedder.embed("exemplar add", path)?);
    }
    let before = score_all(
        &build_matcher(&config, &bundle, Some(&encoder))?,
        index,
        &embeddings,
    );
    let mut dir = label_dir(&config, label);
    if negative {
        dir = dir.join("negative");
    }
    let copy_err = |from: &Path, to: &Path, source| ExemplarCmdError::Copy {
        from: from.into(),
        to: to.into(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(|e| copy_err(&images[0], &dir, e))?;
    let mut copied = Vec::with_capacity(images.len());
    for path in images {
        let bytes = std::fs::read(path).map_err(|e| copy_err(path, &dir, e))?;
        let to = destination(&dir, path, &bytes);
        std::fs::write(&to, &bytes).map_err(|e| copy_err(path, &to, e))?;
        copied.push(to);
    }
    let after = score_all(
        &build_matcher(&config, &bundle, Some(&encoder))?,
        index,
        &embeddings,
    );
    Ok(AddReport {
        label: label.into(),
        negative,
        dir,
        images: copied
            .into_iter()
            .zip(before)
            .zip(after)
            .map(|((path, (before, _)), (after, runner_up))| ImageEffect {
                path,
                before,
                after,
                runner_up,
            })
            .collect(),
    })
}

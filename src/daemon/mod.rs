//! The daemon: a capture thread feeding a freshest-frame mailbox, and the inference loop that
//! preprocesses, encodes, matches, triggers and publishes.
//!
//! ```text
//! capture thread:  source.next_frame() ──> Mailbox (one slot: a newer frame replaces an unread one)
//! inference loop:  Mailbox ──> Preprocessor ──> ImageEncoder ──> Matcher ──> TriggerBank ──> sinks
//! ```
//!
//! When inference is slower than the camera, the frame waiting in the mailbox is replaced and
//! counted as dropped: nothing queues without bound and events always describe a recent frame.
//! Frames a source drops itself (a pipe source's own mailbox) are counted with them.
//! Runtime faults (a corrupt frame, a camera error, a sink error) are logged and counted; the loop
//! goes on. It ends when the source finishes (a replayed clip without `loop`) or on shutdown, and
//! then publishes end events for every active label and closes the sinks (MQTT: `offline`).
//!
//! This file builds the daemon (model, matcher, trigger bank) and reloads its prompts; `run.rs`
//! is the capture thread and the loop, `stats.rs` the latency histogram and the stats line,
//! `snapshots.rs` the hook that picks and writes each start event's snapshot, `history.rs` the hook
//! that samples frames and events into the store (`[store]`, read by `edgeclip search`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use log::{info, warn};

use crate::config::{Config, ConfigError, ScoreKind};
use crate::event::Event;
use crate::matcher::MatcherError;
use crate::model::ModelError;
use crate::prompts::PromptError;
use crate::sink::{EventSink, Watched};
use crate::trigger::{FrameStamp, Metric, TriggerParams};

mod capture;
mod health;
mod history;
pub mod labels;
mod pipeline;
mod run;
mod snapshots;
mod stats;
mod watchdog;
mod web;

pub use crate::mailbox::Delivery;
pub use pipeline::{CameraStep, FrameError, Pipeline, Step};
pub use snapshots::SnapshotCounts;
pub use stats::LatencyHistogram;
pub use watchdog::{INFERENCE_STUCK, PANIC_EXIT, exit_on_panic};

/// Errors that stop the daemon at start-up (runtime faults are logged, not returned).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `model.bundle` does not load.
    #[error("{}: model.bundle: {error}", file.display())]
    Bundle {
        /// The config file.
        file: PathBuf,
        /// What is wrong with the bundle (its message names the bundle's file).
        error: ModelError,
    },
    /// The model bundle could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Prompt embeddings could not be loaded or computed.
    #[error(transparent)]
    Prompts(#[from] PromptError),
    /// The labels could not be matched.
    #[error("prompts: {0}")]
    Matcher(#[from] MatcherError),
    /// `matcher.vocabulary` does not load or was made with other weights.
    #[error("{}: matcher.vocabulary: {error}", file.display())]
    Vocabulary {
        /// The config file.
        file: PathBuf,
        /// Why (names the vocabulary file).
        error: Box<PromptError>,
    },
    /// An example image is missing or not an image.
    #[error("{}: {error}", file.display())]
    Exemplar {
        /// The config file.
        file: PathBuf,
        /// Why (names the key and the image).
        error: Box<crate::prompts::images::ExemplarError>,
    },
    /// The runtime asked for is not available.
    #[error("model.runtime: {0}")]
    Runtime(String),
    /// The capture thread could not be started.
    #[error("cannot start the capture thread: {0}")]
    Thread(std::io::Error),
    /// The snapshot folder cannot be written (its message names it).
    #[error(transparent)]
    Snapshots(#[from] crate::snapshot::SnapshotError),
    /// The store cannot be opened (its message names the file).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The web page's listener cannot be bound (its message names `http.listen`).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// Flags that steer a running daemon, set from signal handlers or tests.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Set to stop: the frame in hand is finished, end events are published, sinks closed.
    pub shutdown: Arc<AtomicBool>,
    /// Set to reload the prompts from the config file (SIGHUP); cleared when done.
    pub reload: Arc<AtomicBool>,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames preprocessed and encoded.
    pub processed: u64,
    /// Frames dropped for fresher ones: replaced in the daemon's mailbox before inference took
    /// them, or dropped inside the source before it delivered them
    /// ([`FrameSource::dropped`](crate::source::FrameSource::dropped)).
    pub dropped: u64,
    /// Frames that failed to decode or preprocess.
    pub bad_frames: u64,
    /// Errors reported by the source.
    pub source_errors: u64,
    /// Events published.
    pub events: u64,
    /// Events the sinks accepted and later dropped ([`EventSink::events_dropped`], summed).
    pub events_dropped: u64,
    /// Frame-to-event latencies of every processed frame.
    pub latency: LatencyHistogram,
    /// CPU time the process used during the run (user + system, every thread), in seconds;
    /// `None` where `/proc/self/stat` is not available.
    pub cpu_s: Option<f64>,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
    /// What the snapshots did (all zero when they are off).
    pub snapshots: SnapshotCounts,
    /// The store's state and counts, as of the last stats line (and at the end).
    pub store: crate::event::StoreStats,
}

/// The trigger parameters of prompt `index`: its overrides over `[trigger]` and
/// `matcher.threshold`.
fn trigger_params(config: &Config, index: usize) -> TriggerParams {
    let p = &config.prompts[index];
    let cooldown_s = p.cooldown_s.unwrap_or(config.trigger.cooldown_s);
    TriggerParams {
        threshold: p.threshold.unwrap_or(config.matcher.threshold),
        enter_frames: p.enter_frames.unwrap_or(config.trigger.enter_frames),
        exit_frames: p.exit_frames.unwrap_or(config.trigger.exit_frames),
        cooldown: Duration::try_from_secs_f32(cooldown_s).unwrap_or(Duration::ZERO),
    }
}

/// The trigger metric `matcher.score` thresholds.
fn metric(score: ScoreKind) -> Metric {
    match score {
        ScoreKind::Prob => Metric::Prob,
        ScoreKind::Cosine => Metric::Score,
    }
}

/// The daemon: its config, the [`Pipeline`] it runs every frame through and its snapshots.
pub struct Daemon {
    config: Config,
    pipeline: Pipeline,
    /// One per camera, in config order; empty when `snapshots.enabled` is off.
    snapshots: Vec<snapshots::Snapshots>,
    /// `None` when `store.enabled` is off.
    history: Option<history::History>,
    /// `None` when `http.enabled` is off.
    web: Option<web::Web>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("cameras", &self.config.cameras.len())
            .field("bundle", &self.pipeline.bundle().dir())
            .finish()
    }
}

impl Daemon {
    /// Loads the bundle, the image tower (on the device `model.runtime` selects) and the prompt
    /// embeddings the config names, and checks that the snapshot folder is writable (first: a
    /// folder problem is reported before the model takes its time to load).
    pub fn new(config: Config) -> Result<Daemon, DaemonError> {
        let mut snapshots = Vec::new();
        for i in 0..config.cameras.len() {
            snapshots.extend(snapshots::Snapshots::open(&config.for_camera(i))?);
        }
        let web = web::Web::open(&config)?;
        let history = history::History::open(&config)?;
        let pipeline = Pipeline::new(&config)?;
        Ok(Daemon {
            config,
            pipeline,
            snapshots,
            history,
            web,
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the run preprocesses each round on a second thread while the image tower encodes
    /// the round before (`model.prepare_ahead`, and a core to spare).
    pub fn prepares_ahead(&self) -> bool {
        self.pipeline.can_prepare_ahead()
    }

    /// Tells the sinks what is watched after a reload (call it once the old labels' end events
    /// are published): MQTT announces new labels to Home Assistant and deletes removed ones.
    fn announce_labels(&self, sinks: &mut [Box<dyn EventSink>]) {
        let watched = Watched::all(&self.config);
        for s in sinks.iter_mut() {
            if let Err(e) = s.labels_changed(&watched) {
                warn!("{}: new labels not announced: {e}", s.name());
            }
        }
    }

    /// Re-reads the prompts from the config file and rebuilds the matchers and triggers. Active
    /// labels get their end events first (returned, stamped by `stamp` of their camera).
    fn reload(&mut self, stamp: impl Fn(usize) -> FrameStamp) -> Vec<Event> {
        let Some(file) = self.config.file.clone() else {
            warn!("reload asked, but the config did not come from a file");
            return vec![];
        };
        let new = match Config::from_file(&file) {
            Ok(c) => c,
            Err(e) => {
                warn!("reload failed, keeping the current prompts:\n{e}");
                return vec![];
            }
        };
        if new.model.bundle != self.config.model.bundle {
            warn!("reload: model.bundle changed; restart the daemon to load another model");
        }
        let mut config = self.config.clone();
        config.prompts = new.prompts;
        config.matcher = new.matcher;
        config.trigger = new.trigger;
        if new.cameras.len() != config.cameras.len()
            || new
                .cameras
                .iter()
                .zip(&config.cameras)
                .any(|(a, b)| a.name != b.name)
        {
            warn!("reload: the cameras changed; restart the daemon to use other cameras");
        } else {
            // Each camera's own prompts, labels and zones follow the file; its source does not.
            for (camera, new) in config.cameras.iter_mut().zip(new.cameras) {
                camera.labels = new.labels;
                camera.prompts = new.prompts;
                camera.zones = new.zones;
                camera.whole_frame = new.whole_frame;
            }
        }
        if let Err(e) = config.validate() {
            warn!("reload failed, keeping the current prompts:\n{e}");
            return vec![];
        }
        match self.pipeline.reload(&config, stamp) {
            Ok(ends) => {
                self.config = config;
                info!("prompts reloaded: {} labels", self.config.prompts.len());
                ends
            }
            Err(e) => {
                warn!("reload failed, keeping the current prompts: {e}");
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_overrides_win_over_the_defaults() {
        let text = "[camera]\nsource = \"v4l2:/dev/video0\"\n[model]\nbundle = \"m\"\n\
                    [[prompts]]\nlabel = \"person\"\ntext = \"a person\"\n\
                    [[prompts]]\nlabel = \"dog\"\ntext = [\"a dog\", \"a puppy\"]\n\
                    threshold = 0.7\nenter_frames = 1\ncooldown_s = 2.5\n\
                    [trigger]\nexit_frames = 9\n[matcher]\nscore = \"cosine\"";
        let c = Config::from_toml_str(text, None).unwrap();
        let p = trigger_params(&c, 1);
        assert_eq!(p.threshold, 0.7);
        assert_eq!(p.enter_frames, 1);
        assert_eq!(p.exit_frames, 9);
        assert_eq!(p.cooldown, Duration::from_millis(2500));
        let p0 = trigger_params(&c, 0);
        assert_eq!(
            (p0.threshold, p0.enter_frames, p0.cooldown),
            (0.5, 3, Duration::ZERO)
        );
        assert_eq!(metric(c.matcher.score), Metric::Score);
        assert_eq!(metric(ScoreKind::Prob), Metric::Prob);
    }
}

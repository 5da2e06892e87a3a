//! One frame through the model and the triggers: the per-frame work of the daemon, in one place
//! that `edgeclip replay` and `edgeclip calibrate` run too, so that what they show is what the
//! daemon does.
//!
//! ```text
//! Frame ──> Preprocessor ──> ImageEncoder ──> Matcher ──> TriggerBank ──> events
//!                                              └──> Scores (every label and background text)
//! ```
//!
//! A [`Pipeline`] is built from a [`Config`] (the bundle, the image tower on the device
//! `model.runtime` selects, the prompt embeddings, one trigger per label) and keeps its buffers
//! between frames, so a step allocates nothing but the events it returns. It knows no source,
//! sink or clock: the caller brings the frames and says when each one happened.

use std::path::PathBuf;
use std::time::Instant;

use log::info;

use super::labels::build_matcher;
use super::{DaemonError, build_bank};
use crate::config::Config;
use crate::event::{Event, RunnerUp};
use crate::frame::Frame;
use crate::matcher::{Label, Matcher, Row, Scores};
use crate::model::{Bundle, Device, ImageEncoder, ModelError, set_threads};
use crate::preprocess::{PreprocessError, Preprocessor, Spec};
use crate::trigger::{FrameStamp, LabelScore, TriggerBank, TriggerParams};

/// Why one frame produced no scores (the run goes on with the next frame).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame could not be decoded or preprocessed.
    #[error("skipping frame {seq}: {source}")]
    Preprocess {
        /// The frame's sequence number.
        seq: u64,
        /// What is wrong with it.
        #[source]
        source: PreprocessError,
    },
    /// The image tower failed on it.
    #[error("frame {seq}: {source}")]
    Encode {
        /// The frame's sequence number.
        seq: u64,
        /// The engine's error.
        #[source]
        source: ModelError,
    },
}

/// What one frame did: its scores and the events it caused.
#[derive(Debug)]
pub struct Step<'a> {
    /// Every label's and background text's score, probability and runner-up, indexed like
    /// [`Pipeline::labels`] (the `[[prompts]]` first, in their order).
    pub scores: &'a Scores,
    /// The start and end events this frame caused, in label order.
    pub events: Vec<Event>,
    /// The frame's stamp, as `step` asked for it.
    pub stamp: FrameStamp,
}

/// The model side of the daemon and its per-frame buffers.
pub struct Pipeline {
    bundle: Bundle,
    preprocessor: Preprocessor,
    encoder: ImageEncoder,
    matcher: Matcher,
    bank: TriggerBank,
    /// How many of the matcher's labels are `[[prompts]]` (the rest are background texts).
    prompts: usize,
    pixels: Vec<f32>,
    embedding: Vec<f32>,
    scores: Scores,
    label_scores: Vec<LabelScore>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("bundle", &self.bundle.dir())
            .field("labels", &self.prompts)
            .finish()
    }
}

impl Pipeline {
    /// Loads the bundle, the image tower (on the device `model.runtime` selects) and the prompt
    /// embeddings the config names, and builds one trigger per label.
    pub fn new(config: &Config) -> Result<Pipeline, DaemonError> {
        let threads = config.model.threads.unwrap_or(1);
        set_threads(threads);
        let started = Instant::now();
        let bundle = Bundle::load(&config.model.bundle).map_err(|error| DaemonError::Bundle {
            file: config
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from("<memory>")),
            error,
        })?;
        let encoder = ImageEncoder::load_for(&bundle, config.model.precision, config.model.runtime)
            .map_err(|e| match e {
                ModelError::Runtime { .. } => DaemonError::Runtime(e.to_string()),
                e => e.into(),
            })?;
        let preprocessor = Preprocessor::new(Spec::from(&bundle.manifest.image))
            .with_frame_limit(crate::source::frame_limit(&config.camera));
        let matcher = build_matcher(config, &bundle, Some(&encoder))?;
        let bank = build_bank(config);
        let on = match encoder.device() {
            Device::Cpu => format!("on the CPU with {threads} thread(s)"),
            Device::Cuda => "on the GPU (CUDA)".to_string(),
        };
        info!(
            "model {} ({}, {}) loaded in {:.0} ms {on}; {} labels, {} background",
            bundle.name(),
            encoder.path().display(),
            encoder.precision(),
            started.elapsed().as_secs_f64() * 1e3,
            config.prompts.len(),
            config.matcher.background.len()
        );
        Ok(Pipeline {
            pixels: vec![0f32; preprocessor.output_len()],
            embedding: vec![0f32; encoder.dim()],
            prompts: config.prompts.len(),
            label_scores: Vec::with_capacity(config.prompts.len()),
            scores: Scores::default(),
            bundle,
            preprocessor,
            encoder,
            matcher,
            bank,
        })
    }

    /// The bundle the model came from.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The matcher's labels: the `[[prompts]]` labels in their order, then the background
    /// texts.
    pub fn labels(&self) -> &[Label] {
        self.matcher.labels()
    }

    /// Every row the matcher scores (labels, vocabulary, negatives): what
    /// [`Scores::runner_up`] points at.
    pub fn rows(&self) -> &[Row] {
        self.matcher.rows()
    }

    /// The trigger parameters of label `index` (a `[[prompts]]` position).
    pub fn trigger_params(&self, index: usize) -> Option<TriggerParams> {
        self.bank.params(index)
    }

    /// The image embedding of the last frame scored (as the encoder returned it).
    pub fn embedding(&self) -> &[f32] {
        &self.embedding
    }

    /// The labels' scores of the last [`step`](Self::step), as the triggers got them.
    pub fn label_scores(&self) -> &[LabelScore] {
        &self.label_scores
    }

    /// Preprocesses, encodes and scores one frame, without feeding the triggers (calibration
    /// scores positive examples this way).
    pub fn score(&mut self, frame: &Frame) -> Result<&Scores, FrameError> {
        self.preprocessor
            .frame_to_tensor(frame, &mut self.pixels)
            .map_err(|source| FrameError::Preprocess {
                seq: frame.seq,
                source,
            })?;
        self.encoder
            .encode_into(&self.pixels, &mut self.embedding)
            .map_err(|source| FrameError::Encode {
                seq: frame.seq,
                source,
            })?;
        self.matcher.score(&self.embedding, &mut self.scores);
        Ok(&self.scores)
    }

    /// [`score`](Self::score)s one frame and feeds its labels' scores to the triggers.
    /// `stamp` is asked once the frame is scored, so that a latency it measures covers the
    /// inference.
    pub fn step(
        &mut self,
        frame: &Frame,
        stamp: impl FnOnce() -> FrameStamp,
    ) -> Result<Step<'_>, FrameError> {
        self.score(frame)?;
        self.label_scores.clear();
        self.label_scores
            .extend((0..self.prompts).map(|i| LabelScore {
                label: i,
                score: self.scores.cos[i],
                prob: self.scores.prob[i],
            }));
        let stamp = stamp();
        let mut events = self.bank.update(stamp, &self.label_scores);
        name_runners_up(&self.matcher, &self.scores, &mut events);
        Ok(Step {
            scores: &self.scores,
            events,
            stamp,
        })
    }

    /// Ends every active label (shutdown, end of a clip); `stamp` stamps the events.
    pub fn finish(&mut self, stamp: FrameStamp) -> Vec<Event> {
        self.bank.finish(stamp)
    }

    /// Rebuilds the matcher and the triggers for `config`'s prompts (same bundle). Active labels
    /// get their end events first (returned); on an error nothing changes.
    pub(super) fn reload(
        &mut self,
        config: &Config,
        stamp: FrameStamp,
    ) -> Result<Vec<Event>, DaemonError> {
        let matcher = build_matcher(config, &self.bundle, Some(&self.encoder))?;
        let ends = self.bank.finish(stamp);
        self.matcher = matcher;
        self.bank = build_bank(config);
        self.prompts = config.prompts.len();
        Ok(ends)
    }
}

/// Names each event's runner-up: its label's strongest competitor in the frame just scored.
fn name_runners_up(matcher: &Matcher, scores: &Scores, events: &mut [Event]) {
    for e in events {
        let Some(i) = matcher.labels().iter().position(|l| l.name == e.label) else {
            continue;
        };
        e.runner_up = scores.runner_up[i].map(|r| RunnerUp {
            label: matcher.rows()[r.row].name.clone(),
            score: r.score,
        });
    }
}

//! Frames through the model and the triggers: the per-frame work of the daemon, in one place
//! that `edgeclip replay` and `edgeclip calibrate` run too, so that what they show is what the
//! daemon does.
//!
//! ```text
//!                 ┌ zone all ┐                               ┌ Matcher ─> TriggerBank (all) ─> events
//! Frame ──> Preprocessor ──> batch ──> ImageEncoder ──> embeddings ┤
//!                 └ zone N   ┘   (every zone of every              └ Matcher ─> TriggerBank (N)   ─> events
//!                                 frame of the round)
//! ```
//!
//! A [`Pipeline`] holds the model once (the bundle, the image tower on the device
//! `model.runtime` selects) and one [`CameraPipe`] per camera: its preprocessor, its matcher
//! (the camera's labels: [`Config::for_camera`]) and one trigger bank per zone. A round takes
//! the freshest frame of each camera that has one; every zone of every frame is preprocessed
//! into one batch for the image tower; each zone's embedding is scored by its camera's matcher
//! and fed to that zone's triggers. Buffers are kept between rounds, so a round allocates
//! nothing but the events it returns. The daemon may instead step rounds ahead
//! ([`Pipeline::step_ahead`]): while the tower encodes one round, a second thread (started for
//! each round) preprocesses the next. The pipeline knows no source, sink or clock: the caller
//! brings the frames and says when each one happened.

use std::path::PathBuf;
use std::time::Instant;

use log::info;

use super::labels::build_matcher;
use super::{DaemonError, metric, trigger_params};
use crate::config::{Config, Rect};
use crate::event::{Event, RunnerUp};
use crate::frame::Frame;
use crate::matcher::{Label, Matcher, Row, Scores};
use crate::model::{
    Bundle, Device, ImageEncoder, ModelError, TowerCost, choose_parallelism, set_threads,
};
use crate::preprocess::{PreprocessError, Preprocessor, Spec};
use crate::trigger::{FrameStamp, LabelScore, LabelSpec, TriggerBank, TriggerParams};

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
    /// The image tower failed on the round this frame was part of.
    #[error("frame {seq}: {message}")]
    Round {
        /// The frame's sequence number.
        seq: u64,
        /// The engine's error, in words.
        message: String,
    },
}

/// What one frame did: its scores and the events it caused.
#[derive(Debug)]
pub struct Step<'a> {
    /// The first zone's scores (the whole frame, unless the camera turned it off): every
    /// label's and background text's score, probability and runner-up, indexed like
    /// [`Pipeline::labels`] (the `[[prompts]]` first, in their order).
    pub scores: &'a Scores,
    /// The start and end events this frame caused, zone by zone, in label order.
    pub events: Vec<Event>,
    /// The frame's stamp, as `step` asked for it.
    pub stamp: FrameStamp,
}

/// What one frame of a round did: its camera, its events and its stamp.
#[derive(Debug)]
pub struct CameraStep {
    /// The camera's position in `config.cameras`.
    pub camera: usize,
    /// The frame's stamp.
    pub stamp: FrameStamp,
    /// The start and end events the frame caused, zone by zone, in label order.
    pub events: Vec<Event>,
}

/// One zone of one camera: the labels it watches, their triggers and the last scores.
struct ZonePipe {
    name: String,
    rect: Rect,
    /// The camera's prompt positions this zone watches (the bank's slots, in order).
    labels: Vec<usize>,
    bank: TriggerBank,
    scores: Scores,
    embedding: Vec<f32>,
    /// The last frame's scores of `labels`, indexed by the camera's prompt position.
    label_scores: Vec<LabelScore>,
    /// The same, indexed by the bank's slot (what the bank takes).
    bank_scores: Vec<LabelScore>,
}

/// One camera's side of the pipeline.
struct CameraPipe {
    name: String,
    preprocessor: Preprocessor,
    matcher: Matcher,
    zones: Vec<ZonePipe>,
    /// The camera's prompts' trigger parameters (its [`Config::for_camera`] order).
    params: Vec<TriggerParams>,
}

impl CameraPipe {
    /// The matcher and triggers of camera `index` of `config`.
    fn build(
        config: &Config,
        index: usize,
        bundle: &Bundle,
        encoder: &ImageEncoder,
        dim: usize,
    ) -> Result<CameraPipe, DaemonError> {
        let view = config.for_camera(index);
        let camera = view.camera();
        let preprocessor = Preprocessor::new(Spec::from(&bundle.manifest.image))
            .with_frame_limit(crate::source::frame_limit(camera));
        let matcher = build_matcher(&view, bundle, Some(encoder))?;
        let params: Vec<TriggerParams> = (0..view.prompts.len())
            .map(|i| trigger_params(&view, i))
            .collect();
        let zones = view
            .zone_views()
            .into_iter()
            .map(|z| {
                let specs = z
                    .labels
                    .iter()
                    .map(|&i| LabelSpec {
                        label: view.prompts[i].label.clone(),
                        prompt: view.prompts[i].display_text().to_string(),
                        params: params[i],
                    })
                    .collect();
                ZonePipe {
                    bank: TriggerBank::new(camera.name.clone(), metric(view.matcher.score), specs)
                        .with_zone(z.name.clone()),
                    name: z.name,
                    rect: z.rect,
                    label_scores: Vec::with_capacity(z.labels.len()),
                    bank_scores: Vec::with_capacity(z.labels.len()),
                    labels: z.labels,
                    scores: Scores::default(),
                    embedding: vec![0f32; dim],
                }
            })
            .collect();
        Ok(CameraPipe {
            name: camera.name.clone(),
            preprocessor,
            matcher,
            zones,
            params,
        })
    }

    /// Scores zone `z`'s embedding (already in place) and, with `stamp`, feeds its triggers.
    fn score_zone(&mut self, z: usize, stamp: Option<FrameStamp>, events: &mut Vec<Event>) {
        let zone = &mut self.zones[z];
        self.matcher.score(&zone.embedding, &mut zone.scores);
        zone.label_scores.clear();
        zone.bank_scores.clear();
        for (slot, &i) in zone.labels.iter().enumerate() {
            let (score, prob) = (zone.scores.cos[i], zone.scores.prob[i]);
            zone.label_scores.push(LabelScore {
                label: i,
                score,
                prob,
            });
            zone.bank_scores.push(LabelScore {
                label: slot,
                score,
                prob,
            });
        }
        if let Some(stamp) = stamp {
            let mut new = zone.bank.update(stamp, &zone.bank_scores);
            name_runners_up(&self.matcher, &zone.scores, &mut new);
            events.append(&mut new);
        }
    }

    fn finish(&mut self, stamp: FrameStamp) -> Vec<Event> {
        self.zones
            .iter_mut()
            .flat_map(|z| z.bank.finish(stamp))
            .collect()
    }
}

/// A round's frames preprocessed into one batch for the image tower.
#[derive(Debug, Default)]
struct Prepared {
    /// The images, one after another (`input_len` values each).
    pixels: Vec<f32>,
    /// Which (camera, zone) each image is.
    images: Vec<(usize, usize)>,
    /// One per frame of the round: an error leaves the frame out of the batch.
    results: Vec<Result<(), FrameError>>,
}

/// Preprocesses every zone of every frame of a round into `into` (its buffers reused). Only the
/// cameras' preprocessors are touched, so that this can run on another thread while the image
/// tower encodes the round before ([`Pipeline::step_ahead`]).
fn prepare(
    cameras: &mut [CameraPipe],
    len: usize,
    frames: &[(usize, &Frame)],
    into: &mut Prepared,
) {
    into.images.clear();
    into.results.clear();
    let mut rects: Vec<Rect> = Vec::new();
    for &(c, frame) in frames {
        let camera = &mut cameras[c];
        rects.clear();
        rects.extend(camera.zones.iter().map(|z| z.rect));
        let start = into.images.len() * len;
        into.pixels.resize(start + rects.len() * len, 0.0);
        match camera
            .preprocessor
            .frame_to_zone_tensors(frame, &rects, &mut into.pixels[start..])
        {
            Ok(()) => {
                into.images.extend((0..rects.len()).map(|z| (c, z)));
                into.results.push(Ok(()));
            }
            Err(source) => {
                into.pixels.truncate(start);
                into.results.push(Err(FrameError::Preprocess {
                    seq: frame.seq,
                    source,
                }));
            }
        }
    }
}

/// Runs the image tower on `batch` into `embeddings`. On a failure every frame that was in the
/// batch gets the error (the first its own, the others a [`FrameError::Round`]).
fn run_tower(
    encoder: &mut ImageEncoder,
    batch: &mut Prepared,
    frames: &[(usize, &Frame)],
    embeddings: &mut Vec<f32>,
) {
    let (len, dim) = (encoder.input_len(), encoder.dim());
    let n = batch.images.len();
    embeddings.resize(n * dim, 0.0);
    if n == 0 {
        return;
    }
    let Err(e) = encoder.encode_batch_into(&batch.pixels[..n * len], &mut embeddings[..n * dim])
    else {
        return;
    };
    let mut first = Some(e);
    for (r, &(_, frame)) in batch.results.iter_mut().zip(frames) {
        if r.is_ok() {
            let seq = frame.seq;
            *r = Err(match first.take() {
                Some(source) => FrameError::Encode { seq, source },
                None => FrameError::Round {
                    seq,
                    message: "the image tower failed on its round".to_owned(),
                },
            });
        }
    }
}

/// The model, shared by every camera, and each camera's matcher and triggers.
pub struct Pipeline {
    bundle: Bundle,
    encoder: ImageEncoder,
    cameras: Vec<CameraPipe>,
    /// The round the image tower encodes.
    batch: Prepared,
    /// The next round, preprocessed ahead while the tower encodes `batch`
    /// ([`step_ahead`](Self::step_ahead)).
    ahead: Prepared,
    /// The round's embeddings (`dim` values each).
    embeddings: Vec<f32>,
    /// `model.prepare_ahead` is on and the tower leaves a CPU core free
    /// ([`can_prepare_ahead`](Self::can_prepare_ahead)).
    prepare_ahead: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("bundle", &self.bundle.dir())
            .field("cameras", &self.cameras.len())
            .finish()
    }
}

impl Pipeline {
    /// Loads the bundle and the image tower (on the device `model.runtime` selects) once, and
    /// for every camera its prompt embeddings and one trigger bank per zone.
    pub fn new(config: &Config) -> Result<Pipeline, DaemonError> {
        let threads = config.model.threads.unwrap_or(1);
        set_threads(threads);
        crate::model::timing::set_enabled(config.model.precision_timing);
        let started = Instant::now();
        let bundle = Bundle::load(&config.model.bundle).map_err(|error| DaemonError::Bundle {
            file: config
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from("<memory>")),
            error,
        })?;
        let mut encoder =
            ImageEncoder::load_for(&bundle, config.model.precision, config.model.runtime).map_err(
                |e| match e {
                    ModelError::Runtime { .. } => DaemonError::Runtime(e.to_string()),
                    e => e.into(),
                },
            )?;
        let dim = encoder.dim();
        let cameras = (0..config.cameras.len())
            .map(|i| CameraPipe::build(config, i, &bundle, &encoder, dim))
            .collect::<Result<Vec<_>, _>>()?;
        let images: usize = cameras.iter().map(|c| c.zones.len()).sum();
        let (threads, workers) = parallelism(config, &mut encoder, images)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (on, spare_core) = match encoder.device() {
            Device::Cpu => (
                format!(
                    "on the CPU with {threads} thread(s) x {workers} worker(s) for {images} \
                     image(s) a round"
                ),
                threads * workers < cores,
            ),
            Device::Cuda => ("on the GPU (CUDA)".to_string(), cores > 1),
        };
        let prepare_ahead = spare_core && config.model.prepare_ahead;
        let ahead = if prepare_ahead {
            "; frames are preprocessed on a spare core while the tower runs"
        } else {
            ""
        };
        info!(
            "model {} ({}, {}) loaded in {:.0} ms {on}; {} labels, {} background; {} camera(s), \
             {images} zone(s){ahead}",
            bundle.name(),
            encoder.path().display(),
            encoder.precision(),
            started.elapsed().as_secs_f64() * 1e3,
            config.prompts.len(),
            config.matcher.background.len(),
            cameras.len(),
        );
        Ok(Pipeline {
            bundle,
            encoder,
            cameras,
            batch: Prepared::default(),
            ahead: Prepared::default(),
            embeddings: Vec::new(),
            prepare_ahead,
        })
    }

    /// The bundle the model came from.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The number of cameras.
    pub fn cameras(&self) -> usize {
        self.cameras.len()
    }

    /// The name of camera `camera`.
    pub fn camera_name(&self, camera: usize) -> &str {
        &self.cameras[camera].name
    }

    /// The zone names of camera `camera`, in order (`all` first unless it is off).
    pub fn zone_names(&self, camera: usize) -> impl Iterator<Item = &str> {
        self.cameras[camera].zones.iter().map(|z| z.name.as_str())
    }

    /// The first camera's matcher labels: its prompts in order, then the background texts.
    pub fn labels(&self) -> &[Label] {
        self.cameras[0].matcher.labels()
    }

    /// Every row the first camera's matcher scores (labels, vocabulary, negatives): what
    /// [`Scores::runner_up`] points at.
    pub fn rows(&self) -> &[Row] {
        self.cameras[0].matcher.rows()
    }

    /// The trigger parameters of the first camera's label `index` (a position in its prompts).
    pub fn trigger_params(&self, index: usize) -> Option<TriggerParams> {
        self.cameras[0].params.get(index).copied()
    }

    /// The image embedding of the first camera's first zone, as of its last frame.
    pub fn embedding(&self) -> &[f32] {
        self.camera_embedding(0)
    }

    /// The image embedding of camera `camera`'s first zone (the whole frame unless it is off),
    /// as of its last frame: what the store keeps.
    pub fn camera_embedding(&self, camera: usize) -> &[f32] {
        self.cameras[camera]
            .zones
            .first()
            .map_or(&[][..], |z| &z.embedding)
    }

    /// The first camera's first zone's label scores of the last [`step`](Self::step).
    pub fn label_scores(&self) -> &[LabelScore] {
        self.zone_label_scores(0, 0)
    }

    /// Zone `zone` of camera `camera`: its labels' scores of its last frame, each labelled with
    /// its position in the camera's prompts.
    pub fn zone_label_scores(&self, camera: usize, zone: usize) -> &[LabelScore] {
        &self.cameras[camera].zones[zone].label_scores
    }

    /// Preprocesses, encodes and scores one frame of the first camera, without feeding the
    /// triggers (calibration scores positive examples this way): its first zone's scores.
    pub fn score(&mut self, frame: &Frame) -> Result<&Scores, FrameError> {
        self.encode_round(&[(0, frame)]);
        self.batch.results.pop().expect("one result per frame")?;
        let camera = &mut self.cameras[0];
        let mut none = Vec::new();
        for z in 0..camera.zones.len() {
            camera.score_zone(z, None, &mut none);
        }
        Ok(&self.cameras[0].zones[0].scores)
    }

    /// One frame of the first camera through the model and its triggers (replay, calibrate).
    /// `stamp` is asked once the frame is scored, so that a latency it measures covers the
    /// inference.
    pub fn step(
        &mut self,
        frame: &Frame,
        stamp: impl FnOnce() -> FrameStamp,
    ) -> Result<Step<'_>, FrameError> {
        let mut stamp = Some(stamp);
        let step = self
            .step_round(&[(0, frame)], |_| (stamp.take().expect("asked once"))())
            .pop()
            .expect("one result per frame")?;
        Ok(Step {
            scores: &self.cameras[0].zones[0].scores,
            events: step.events,
            stamp: step.stamp,
        })
    }

    /// One round: the frames of several cameras (each camera at most once), every zone of each
    /// encoded in one batch, then scored and fed to its triggers. `stamp` is asked for each
    /// frame once the batch is encoded. One result per frame, in order: a frame that fails to
    /// decode does not stop the others.
    pub fn step_round(
        &mut self,
        frames: &[(usize, &Frame)],
        mut stamp: impl FnMut(&Frame) -> FrameStamp,
    ) -> Vec<Result<CameraStep, FrameError>> {
        self.encode_round(frames);
        self.score_round(frames, &mut stamp)
    }

    /// Whether rounds are to be preprocessed ahead, on another thread while the image tower
    /// encodes the round before ([`step_ahead`](Self::step_ahead)): `model.prepare_ahead` is
    /// on and that thread has a core to run on (the tower runs on a GPU, or its threads and
    /// workers leave a CPU core free).
    pub(super) fn can_prepare_ahead(&self) -> bool {
        self.prepare_ahead
    }

    /// Preprocesses a round now, for the next [`step_ahead`](Self::step_ahead) to encode.
    pub(super) fn prepare_ahead(&mut self, frames: &[(usize, &Frame)]) {
        let len = self.encoder.input_len();
        prepare(&mut self.cameras, len, frames, &mut self.ahead);
    }

    /// Encodes and scores the round prepared ahead (`ready`: the frames given to the last
    /// [`prepare_ahead`](Self::prepare_ahead) or `step_ahead`), and meanwhile, on a second
    /// thread, preprocesses `next` for the following call (`next` may be empty). Results as
    /// [`step_round`](Self::step_round)'s, for `ready`. The frames of `next` are decoded only
    /// here, so a frame dropped in a mailbox is never decoded.
    pub(super) fn step_ahead(
        &mut self,
        ready: &[(usize, &Frame)],
        next: &[(usize, &Frame)],
        mut stamp: impl FnMut(&Frame) -> FrameStamp,
    ) -> Vec<Result<CameraStep, FrameError>> {
        assert_eq!(
            self.ahead.results.len(),
            ready.len(),
            "the round prepared ahead is not the one stepped"
        );
        std::mem::swap(&mut self.batch, &mut self.ahead);
        let len = self.encoder.input_len();
        let (cameras, ahead) = (&mut self.cameras, &mut self.ahead);
        let (encoder, batch) = (&mut self.encoder, &mut self.batch);
        let embeddings = &mut self.embeddings;
        let prepared = std::thread::scope(|s| {
            let preparing = (!next.is_empty()).then(|| {
                std::thread::Builder::new()
                    .name("preprocess".into())
                    .spawn_scoped(s, move || prepare(cameras, len, next, ahead))
            });
            run_tower(encoder, batch, ready, embeddings);
            match preparing {
                Some(Ok(thread)) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Some(Err(_)) => return false,
                None => {}
            }
            true
        });
        if next.is_empty() {
            self.ahead.results.clear();
        } else if !prepared {
            // No thread to be had: preprocess here, after the tower.
            prepare(&mut self.cameras, len, next, &mut self.ahead);
        }
        self.place_embeddings();
        self.score_round(ready, &mut stamp)
    }

    /// Preprocesses every zone of every frame into one batch, runs the image tower on it and
    /// leaves each zone's embedding in its [`ZonePipe`]; the frames' outcomes in `self.batch`.
    fn encode_round(&mut self, frames: &[(usize, &Frame)]) {
        let len = self.encoder.input_len();
        prepare(&mut self.cameras, len, frames, &mut self.batch);
        run_tower(
            &mut self.encoder,
            &mut self.batch,
            frames,
            &mut self.embeddings,
        );
        self.place_embeddings();
    }

    /// Each image's embedding of the encoded round (`self.batch`) into its [`ZonePipe`]
    /// (nothing when the tower failed: the zones keep their last).
    fn place_embeddings(&mut self) {
        let dim = self.encoder.dim();
        if self.batch.results.iter().any(Result::is_ok) {
            for (i, &(c, z)) in self.batch.images.iter().enumerate() {
                self.cameras[c].zones[z]
                    .embedding
                    .copy_from_slice(&self.embeddings[i * dim..(i + 1) * dim]);
            }
        }
    }

    /// The encoded round (`self.batch`, of `frames`, its embeddings in place): each zone's
    /// embedding scored and fed to its triggers with its frame's stamp. One result per frame.
    fn score_round(
        &mut self,
        frames: &[(usize, &Frame)],
        stamp: &mut impl FnMut(&Frame) -> FrameStamp,
    ) -> Vec<Result<CameraStep, FrameError>> {
        frames
            .iter()
            .zip(self.batch.results.drain(..))
            .map(|(&(c, frame), ok)| {
                ok?;
                let stamp = stamp(frame);
                let camera = &mut self.cameras[c];
                let mut events = Vec::new();
                for z in 0..camera.zones.len() {
                    camera.score_zone(z, Some(stamp), &mut events);
                }
                Ok(CameraStep {
                    camera: c,
                    stamp,
                    events,
                })
            })
            .collect()
    }

    /// Ends every active label of every camera (shutdown, end of a clip); `stamp` stamps the
    /// events.
    pub fn finish(&mut self, stamp: FrameStamp) -> Vec<Event> {
        self.cameras
            .iter_mut()
            .flat_map(|c| c.finish(stamp))
            .collect()
    }

    /// Ends every active label of camera `camera` (it went offline, the run ends).
    pub fn finish_camera(&mut self, camera: usize, stamp: FrameStamp) -> Vec<Event> {
        self.cameras[camera].finish(stamp)
    }

    /// Rebuilds every camera's matcher and triggers for `config`'s prompts (same bundle, same
    /// cameras). Active labels get their end events first (returned, stamped by `stamp` of
    /// their camera); on an error nothing changes.
    pub(super) fn reload(
        &mut self,
        config: &Config,
        stamp: impl Fn(usize) -> FrameStamp,
    ) -> Result<Vec<Event>, DaemonError> {
        let dim = self.encoder.dim();
        let cameras = (0..config.cameras.len())
            .map(|i| CameraPipe::build(config, i, &self.bundle, &self.encoder, dim))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ends = Vec::new();
        for (i, c) in self.cameras.iter_mut().enumerate() {
            ends.extend(c.finish(stamp(i)));
        }
        self.cameras = cameras;
        Ok(ends)
    }
}

/// Sets the image tower's intra-op threads and inference workers for `images` a round:
/// `model.threads` and `model.workers` where the config sets them, the rest as
/// [`choose_parallelism`] picks for this machine and tower. Returns (threads, workers).
fn parallelism(
    config: &Config,
    encoder: &mut ImageEncoder,
    images: usize,
) -> Result<(usize, usize), DaemonError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let image_ms = match (config.model.threads, encoder.device()) {
        // Only a CPU tower without a thread count needs its time to choose one.
        (None, Device::Cpu) => encoder.time_one_image()?,
        _ => 0.0,
    };
    let tower = TowerCost {
        device: encoder.device(),
        precision: encoder.precision(),
        image_ms,
    };
    let p = choose_parallelism(cores, images, &tower, config.model.workers);
    let threads = config.model.threads.unwrap_or(p.threads);
    set_threads(threads);
    encoder.set_workers(p.workers);
    Ok((threads, encoder.workers()))
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

#[cfg(test)]
mod tests;

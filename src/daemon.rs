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
//! Runtime faults (a corrupt frame, a camera error, a sink error) are logged and counted; the loop
//! goes on. It ends when the source finishes (a replayed clip without `loop`) or on shutdown, and
//! then publishes end events for every active label and closes the sinks (MQTT: `offline`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use crate::config::{Config, ConfigError, ScoreKind};
use crate::event::{Event, Stats};
use crate::frame::Frame;
use crate::matcher::{Label, Matcher, MatcherError, Scores};
use crate::model::{Bundle, Device, ImageEncoder, ModelError, set_threads};
use crate::preprocess::{Preprocessor, Spec};
use crate::prompts::{PromptEmbedder, PromptEmbeddings, PromptError};
use crate::sink::EventSink;
use crate::source::FrameSource;
use crate::trigger::{FrameStamp, LabelScore, LabelSpec, Metric, TriggerBank, TriggerParams};

/// Errors that stop the daemon at start-up (runtime faults are logged, not returned).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model bundle could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Prompt embeddings could not be loaded or computed.
    #[error(transparent)]
    Prompts(#[from] PromptError),
    /// The labels could not be matched.
    #[error("prompts: {0}")]
    Matcher(#[from] MatcherError),
    /// The runtime asked for is not available.
    #[error("model.runtime: {0}")]
    Runtime(String),
    /// The capture thread could not be started.
    #[error("cannot start the capture thread: {0}")]
    Thread(std::io::Error),
}

/// Flags that steer a running daemon, set from signal handlers or tests.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Set to stop: the frame in hand is finished, end events are published, sinks closed.
    pub shutdown: Arc<AtomicBool>,
    /// Set to reload the prompts from the config file (SIGHUP); cleared when done.
    pub reload: Arc<AtomicBool>,
}

/// How the capture side hands frames over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Keep only the freshest frame; replaced frames are dropped and counted (live cameras).
    #[default]
    Freshest,
    /// Wait until the previous frame was taken: nothing is dropped (replaying a recording in a
    /// test or an evaluation).
    Lossless,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Frames the source delivered.
    pub captured: u64,
    /// Frames preprocessed and encoded.
    pub processed: u64,
    /// Frames replaced in the mailbox before inference took them.
    pub dropped: u64,
    /// Frames that failed to decode or preprocess.
    pub bad_frames: u64,
    /// Errors reported by the source.
    pub source_errors: u64,
    /// Events published.
    pub events: u64,
    /// Frame-to-event latencies of every processed frame.
    pub latency: LatencyHistogram,
    /// CPU time the process used during the run (user + system, every thread), in seconds;
    /// `None` where `/proc/self/stat` is not available.
    pub cpu_s: Option<f64>,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
}

/// A fixed-size latency histogram: 2% wide logarithmic buckets from 10 us to 100 s, so that a
/// daemon running for months keeps its latency percentiles in 3 KB instead of a growing list.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    counts: Vec<u32>,
    total: u64,
}

impl LatencyHistogram {
    const MIN_MS: f64 = 0.01;
    const RATIO: f64 = 1.02;
    const BUCKETS: usize = 815; // 0.01 ms * 1.02^815 > 100 s

    /// Counts one latency.
    pub fn record(&mut self, ms: f32) {
        let ms = f64::from(ms).max(Self::MIN_MS);
        let i = ((ms / Self::MIN_MS).ln() / Self::RATIO.ln()) as usize;
        self.counts[i.min(Self::BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// How many latencies were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency below which a share `q` (0..=1) of the counted ones fall, to within 2%
    /// (the upper edge of its bucket); `None` when nothing was counted.
    pub fn percentile(&self, q: f64) -> Option<f32> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some((Self::MIN_MS * Self::RATIO.powi(i as i32 + 1)) as f32);
            }
        }
        None
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; Self::BUCKETS],
            total: 0,
        }
    }
}

/// CPU seconds this process has used (all threads, user + system), from `/proc/self/stat`.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), counted in USER_HZ ticks, which the kernel
    // ABI fixes at 100 per second on every architecture.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[derive(Default)]
struct MailState {
    frame: Option<Frame>,
    finished: bool,
    captured: u64,
    dropped: u64,
    source_errors: u64,
}

/// The one-frame mailbox between capture and inference.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailState>,
    changed: Condvar,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailState> {
        // A poisoned lock only means the other thread panicked; the state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, frame: Frame, delivery: Delivery, shutdown: &AtomicBool) {
        let mut s = self.lock();
        if delivery == Delivery::Lossless {
            while s.frame.is_some() && !shutdown.load(Ordering::Relaxed) {
                s = self
                    .changed
                    .wait_timeout(s, Duration::from_millis(50))
                    .map(|r| r.0)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        if s.frame.replace(frame).is_some() {
            s.dropped += 1;
        }
        s.captured += 1;
        self.changed.notify_all();
    }

    /// The next frame, or `None` once the source finished (or on shutdown) and nothing is left.
    fn take(&self, shutdown: &AtomicBool, reload: &AtomicBool) -> Option<Frame> {
        let mut s = self.lock();
        loop {
            if let Some(f) = s.frame.take() {
                self.changed.notify_all();
                return Some(f);
            }
            if s.finished || shutdown.load(Ordering::Relaxed) || reload.load(Ordering::Relaxed) {
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mailbox: Arc<Mailbox>,
    delivery: Delivery,
    shutdown: Arc<AtomicBool>,
) {
    info!("capturing from {}", source.describe());
    while !shutdown.load(Ordering::Relaxed) {
        match source.next_frame() {
            Ok(Some(frame)) => mailbox.put(frame, delivery, &shutdown),
            Ok(None) => {
                info!("{}: no more frames", source.describe());
                break;
            }
            Err(e) => {
                mailbox.lock().source_errors += 1;
                warn!("{}: {e}", source.describe());
                // Sources back off themselves; this only keeps a tight error loop from spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    mailbox.lock().finished = true;
    mailbox.changed.notify_all();
}

fn cache_file(bundle: &Bundle) -> Option<PathBuf> {
    crate::paths::cache_dir()
        .map(|d| d.join(format!("prompts-{}.safetensors", bundle.fingerprint())))
}

/// Embeds every label's texts and the background texts, using (and refreshing) the disk cache.
fn build_matcher(config: &Config, bundle: &Bundle) -> Result<Matcher, DaemonError> {
    let cache = cache_file(bundle).filter(|p| p.is_file());
    // A stale or damaged cache is not fatal: it is rebuilt.
    let extra: Vec<PathBuf> = cache
        .iter()
        .filter(|p| match PromptEmbeddings::load_for(p, bundle) {
            Ok(_) => true,
            Err(e) => {
                warn!("ignoring the prompt cache: {e}");
                false
            }
        })
        .cloned()
        .collect();
    let mut embedder = PromptEmbedder::new(bundle, &extra)?;
    let mut entries = Vec::new();
    for p in &config.prompts {
        let embeddings = p
            .texts
            .iter()
            .map(|t| embedder.embed(t))
            .collect::<Result<Vec<_>, _>>()?;
        let label = Label {
            name: p.label.clone(),
            prompt: p.display_text().to_string(),
            background: false,
        };
        entries.push((label, embeddings));
    }
    for text in &config.matcher.background {
        let label = Label {
            name: text.clone(),
            prompt: text.clone(),
            background: true,
        };
        entries.push((label, vec![embedder.embed(text)?]));
    }
    info!(
        "prompts: {} labels, {} background texts; {} texts embedded by the text tower, the rest from {}",
        config.prompts.len(),
        config.matcher.background.len(),
        embedder.embedded(),
        match &extra[..] {
            [cache] => format!("the bundle's prompts and the cache {}", cache.display()),
            _ => "the bundle's prompts".to_string(),
        }
    );
    if embedder.embedded() == 0 {
        return matcher(entries, bundle);
    }
    if let Some(path) = cache_file(bundle) {
        let save = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| e.to_string())
            .and_then(|_| embedder.known().save(&path).map_err(|e| e.to_string()));
        match save {
            Ok(()) => debug!("prompt embeddings cached in {}", path.display()),
            Err(e) => warn!("prompt embeddings not cached: {e}"),
        }
    }
    matcher(entries, bundle)
}

fn matcher(entries: Vec<(Label, Vec<Vec<f32>>)>, bundle: &Bundle) -> Result<Matcher, DaemonError> {
    Ok(Matcher::new(
        entries,
        bundle.embed_dim(),
        bundle.manifest.logit_scale,
    )?)
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

fn build_bank(config: &Config) -> TriggerBank {
    let labels = config
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| LabelSpec {
            label: p.label.clone(),
            prompt: p.display_text().to_string(),
            params: trigger_params(config, i),
        })
        .collect();
    TriggerBank::new(
        config.camera.name.clone(),
        metric(config.matcher.score),
        labels,
    )
}

/// The model side of the daemon, loaded once.
pub struct Daemon {
    config: Config,
    bundle: Bundle,
    encoder: ImageEncoder,
    preprocessor: Preprocessor,
    matcher: Matcher,
    bank: TriggerBank,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("camera", &self.config.camera.name)
            .field("bundle", &self.bundle.dir())
            .finish()
    }
}

impl Daemon {
    /// Loads the bundle, the image tower (on the device `model.runtime` selects) and the prompt
    /// embeddings the config names.
    pub fn new(config: Config) -> Result<Daemon, DaemonError> {
        let threads = config.model.threads.unwrap_or(1);
        set_threads(threads);
        let started = Instant::now();
        let bundle = Bundle::load(&config.model.bundle)?;
        let encoder = ImageEncoder::load_for(&bundle, config.model.precision, config.model.runtime)
            .map_err(|e| match e {
                ModelError::Runtime { .. } => DaemonError::Runtime(e.to_string()),
                e => e.into(),
            })?;
        let preprocessor = Preprocessor::new(Spec::from(&bundle.manifest.image));
        let matcher = build_matcher(&config, &bundle)?;
        let bank = build_bank(&config);
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
        Ok(Daemon {
            config,
            bundle,
            encoder,
            preprocessor,
            matcher,
            bank,
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Re-reads the prompts from the config file and rebuilds the matcher and triggers. Active
    /// labels get their end events first (returned).
    fn reload(&mut self, frame: FrameStamp) -> Vec<Event> {
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
        match build_matcher(&config, &self.bundle) {
            Ok(matcher) => {
                let ends = self.bank.finish(frame);
                self.matcher = matcher;
                self.config = config;
                self.bank = build_bank(&self.config);
                info!("prompts reloaded: {} labels", self.config.prompts.len());
                ends
            }
            Err(e) => {
                warn!("reload failed, keeping the current prompts: {e}");
                vec![]
            }
        }
    }

    /// Runs until the source finishes or `control.shutdown` is set.
    pub fn run(
        mut self,
        source: Box<dyn FrameSource>,
        mut sinks: Vec<Box<dyn EventSink>>,
        control: &Control,
        delivery: Delivery,
    ) -> Result<Summary, DaemonError> {
        let mailbox = Arc::new(Mailbox::default());
        let capture = {
            let mailbox = mailbox.clone();
            let shutdown = control.shutdown.clone();
            std::thread::Builder::new()
                .name("edgeclip-capture".into())
                .spawn(move || capture_loop(source, mailbox, delivery, shutdown))
                .map_err(DaemonError::Thread)?
        };
        let started = Instant::now();
        let mut summary = Summary::default();
        let cpu_at_start = process_cpu_seconds();
        let mut pixels = vec![0f32; self.preprocessor.output_len()];
        let mut embedding = vec![0f32; self.encoder.dim()];
        let mut scores = Scores::default();
        let mut label_scores: Vec<LabelScore> = Vec::with_capacity(self.config.prompts.len());
        let mut stats = StatsWindow::new(started);
        let stats_every = self.config.stats.interval();
        let mut last_stamp = FrameStamp {
            seq: 0,
            wall: SystemTime::now(),
            now: Duration::ZERO,
            latency_ms: 0.0,
        };

        loop {
            if control.reload.swap(false, Ordering::Relaxed) {
                let ends = self.reload(last_stamp);
                publish(&mut sinks, &ends, &mut summary);
            }
            let Some(frame) = mailbox.take(&control.shutdown, &control.reload) else {
                if control.reload.load(Ordering::Relaxed) {
                    continue;
                }
                break;
            };
            if let Err(e) = self.preprocessor.frame_to_tensor(&frame, &mut pixels) {
                summary.bad_frames += 1;
                warn!("skipping frame {}: {e}", frame.seq);
                continue;
            }
            if let Err(e) = self.encoder.encode_into(&pixels, &mut embedding) {
                summary.bad_frames += 1;
                warn!("frame {}: {e}", frame.seq);
                continue;
            }
            self.matcher.score(&embedding, &mut scores);
            label_scores.clear();
            label_scores.extend((0..self.config.prompts.len()).map(|i| LabelScore {
                label: i,
                score: scores.cos[i],
                prob: scores.prob[i],
            }));
            let latency_ms = frame.captured_at.elapsed().as_secs_f32() * 1e3;
            last_stamp = FrameStamp {
                seq: frame.seq,
                wall: frame.captured_wall,
                now: frame.captured_at.duration_since(started),
                latency_ms,
            };
            let events = self.bank.update(last_stamp, &label_scores);
            publish(&mut sinks, &events, &mut summary);
            summary.processed += 1;
            summary.latency.record(latency_ms);
            stats.frame(latency_ms);
            if let Some(every) = stats_every
                && stats.due(every)
            {
                let (captured, dropped) = {
                    let s = mailbox.lock();
                    (s.captured, s.dropped)
                };
                let st = stats.take(
                    &self.config.camera.name,
                    captured,
                    dropped + summary.bad_frames,
                    summary.processed,
                );
                info!(
                    "stats: capture {:.1} fps, inference {:.1} fps, latency p50 {:.1} ms p95 {:.1} ms, dropped {} of {}",
                    st.capture_fps, st.inference_fps, st.p50_ms, st.p95_ms, st.dropped, st.frames
                );
                for s in sinks.iter_mut() {
                    if let Err(e) = s.publish_stats(&st) {
                        warn!("{}: stats not published: {e}", s.name());
                    }
                }
            }
        }

        control.shutdown.store(true, Ordering::Relaxed);
        let ends = self.bank.finish(last_stamp);
        publish(&mut sinks, &ends, &mut summary);
        for s in sinks.iter_mut() {
            if let Err(e) = s.close() {
                warn!("{}: close failed: {e}", s.name());
            }
        }
        if capture.join().is_err() {
            warn!("the capture thread panicked");
        }
        let s = mailbox.lock();
        summary.captured = s.captured;
        summary.dropped = s.dropped;
        summary.source_errors = s.source_errors;
        summary.wall_s = started.elapsed().as_secs_f64();
        summary.cpu_s = cpu_at_start.zip(process_cpu_seconds()).map(|(a, b)| b - a);
        let ms = |q| summary.latency.percentile(q).unwrap_or(0.0);
        info!(
            "stopped: {} frames captured, {} processed, {} dropped, {} bad, {} events; \
             latency p50 {:.1} ms p95 {:.1} ms; cpu {:.1} s in {:.1} s ({:.0}% of one core)",
            summary.captured,
            summary.processed,
            summary.dropped,
            summary.bad_frames,
            summary.events,
            ms(0.5),
            ms(0.95),
            summary.cpu_s.unwrap_or(f64::NAN),
            summary.wall_s,
            100.0 * summary.cpu_s.unwrap_or(f64::NAN) / summary.wall_s.max(1e-9)
        );
        Ok(summary)
    }
}

fn publish(sinks: &mut [Box<dyn EventSink>], events: &[Event], summary: &mut Summary) {
    for event in events {
        summary.events += 1;
        for s in sinks.iter_mut() {
            if let Err(e) = s.publish(event) {
                warn!("{}: event not accepted: {e}", s.name());
            }
        }
    }
}

/// Counters for the periodic stats line.
struct StatsWindow {
    since: Instant,
    frames: u64,
    captured_before: u64,
    latencies: Vec<f32>,
}

impl StatsWindow {
    fn new(now: Instant) -> StatsWindow {
        StatsWindow {
            since: now,
            frames: 0,
            captured_before: 0,
            latencies: Vec::with_capacity(1024),
        }
    }

    fn frame(&mut self, latency_ms: f32) {
        self.frames += 1;
        if self.latencies.len() < 100_000 {
            self.latencies.push(latency_ms);
        }
    }

    fn due(&self, every: Duration) -> bool {
        self.since.elapsed() >= every
    }

    /// Stats over the window since the last call; `dropped` and `processed` are totals.
    fn take(&mut self, camera: &str, captured: u64, dropped: u64, processed: u64) -> Stats {
        let secs = self.since.elapsed().as_secs_f32().max(1e-3);
        self.latencies.sort_by(f32::total_cmp);
        let pct = |p: f32| -> f32 {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() - 1) as f32 * p).round() as usize;
            self.latencies[i]
        };
        let st = Stats {
            camera: camera.to_string(),
            ts: SystemTime::now(),
            capture_fps: (captured - self.captured_before) as f32 / secs,
            inference_fps: self.frames as f32 / secs,
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
            dropped,
            frames: processed,
        };
        self.since = Instant::now();
        self.frames = 0;
        self.captured_before = captured;
        self.latencies.clear();
        st
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

    #[test]
    fn histogram_percentiles_within_two_percent() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentile(0.5), None);
        for i in 1..=1000 {
            h.record(i as f32 / 10.0); // 0.1 .. 100 ms
        }
        assert_eq!(h.count(), 1000);
        for (q, want) in [(0.5, 50.0f32), (0.95, 95.0), (1.0, 100.0), (0.001, 0.1)] {
            let got = h.percentile(q).unwrap();
            assert!(got >= want && got <= want * 1.021, "q {q}: {got} vs {want}");
        }
        // Out of range values land in the end buckets instead of panicking.
        h.record(0.0);
        h.record(1e9);
        h.record(f32::NAN);
        assert_eq!(h.count(), 1003);
    }

    #[test]
    fn cpu_seconds_grow_with_work() {
        let before = process_cpu_seconds();
        if !cfg!(target_os = "linux") {
            return;
        }
        let before = before.expect("/proc/self/stat is readable on Linux");
        // Spin until the counter moves by 50 ms (ticks are 10 ms); a busy machine only delays it.
        let t = Instant::now();
        let mut x = 0u64;
        let mut used = 0.0;
        while used < 0.05 && t.elapsed() < Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            used = process_cpu_seconds().unwrap() - before;
        }
        assert!(
            used >= 0.05,
            "{used} s of CPU after {:?} of spinning",
            t.elapsed()
        );
    }
}

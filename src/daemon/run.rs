//! The running daemon: the inference loop that takes each camera's freshest frame from its
//! mailbox ([`capture`](super::capture)), runs a round of them through the [`Pipeline`]
//! (super::Pipeline) and hands the events to the hooks and sinks, with its stats lines and
//! summary.
//!
//! **Scheduling.** Each round takes at most one frame per camera: the freshest each has, from
//! every camera that has one and whose `max_fps` allows it. So no camera starves another (a
//! camera at 30 fps gets one frame a round like a camera at 2 fps), and a slow model sees every
//! camera at the rate it can afford; the frames it cannot take are replaced in their mailboxes
//! by fresher ones and counted as dropped, per camera. When the tower leaves a core free
//! (`model.prepare_ahead`), a round is taken while the round before is in the tower, and
//! preprocessed meanwhile on a second thread; the health changes that take shows are acted on
//! once the round before is through, so events keep the order of rounds in turn.
//!
//! The loop also keeps each camera's health ([`CameraHealth`]: a failing source or no frame
//! for `offline_after_s` is offline; that camera's active labels end and the sinks learn it)
//! and talks to the service manager ([`Notifier`]: ready, status, the watchdog).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::capture::{Doorbell, Feed};
use super::health::CameraHealth;
use super::stats::{StatsWindow, process_cpu_seconds};
use super::watchdog::{Busy, INFERENCE_STUCK, Notifier, StuckMonitor};
use super::{CameraStep, Control, Daemon, DaemonError, Delivery, FrameError, Summary};
use crate::event::{Event, StoreState, StoreStats};
use crate::frame::Frame;
use crate::log_limit::{self, Repeats};
use crate::sink::{CameraStatus, EventSink};
use crate::source::FrameSource;
use crate::trigger::{FrameStamp, LabelScore};

/// How often the inference loop re-checks the shutdown and reload flags while it waits for a
/// frame (signal handlers set them without waking it).
const TAKE_POLL: Duration = Duration::from_millis(100);

/// One camera as the loop sees it: its feed, health, counts and the last frame it stepped.
struct CameraRun {
    name: String,
    feed: Feed,
    health: CameraHealth,
    offline_lines: Repeats<()>,
    /// The last offline line was logged (true at the start: the first online is).
    offline_logged: bool,
    /// The source finished and nothing is left.
    finished: bool,
    /// `max_fps` as an interval, and when the next frame may go through the model.
    min_interval: Option<Duration>,
    next_due: Option<Instant>,
    last_stamp: FrameStamp,
    /// This camera's counts (captured, processed, dropped, bad frames, latencies).
    summary: Summary,
    stats: StatsWindow,
    bad_frames: Repeats<()>,
}

impl CameraRun {
    /// Whether `max_fps` lets a frame through at `now`.
    fn due(&self, now: Instant) -> bool {
        self.next_due.is_none_or(|t| now >= t)
    }

    /// A frame of this camera went through the model at `now`: the next may go `max_fps`'s
    /// interval after this one's slot (so rounds that start a little late keep the rate), but
    /// never sooner than half an interval from now (no burst after a pause).
    fn stepped(&mut self, now: Instant) {
        if let Some(every) = self.min_interval {
            let next = self.next_due.map_or(now + every, |t| t + every);
            self.next_due = Some(next.clamp(now + every / 2, now + every));
        }
    }
}

/// A round: the frames taken, each with its camera's position, and the cameras whose source
/// finished with it (their last frame, if any, is in it).
#[derive(Default)]
struct Round {
    frames: Vec<(usize, Frame)>,
    finished: Vec<usize>,
}

impl Daemon {
    /// Runs until every source finishes or `control.shutdown` is set. `sources` are the
    /// cameras' sources, in the order of `config.cameras`.
    pub fn run(
        mut self,
        sources: Vec<Box<dyn FrameSource>>,
        mut sinks: Vec<Box<dyn EventSink>>,
        control: &Control,
        delivery: Delivery,
    ) -> Result<Summary, DaemonError> {
        assert_eq!(
            sources.len(),
            self.config.cameras.len(),
            "one source per camera"
        );
        self.start_web(&mut sinks)?;
        let started = Instant::now();
        let doorbell = Arc::new(Doorbell::default());
        let mut cameras = Vec::with_capacity(sources.len());
        for (source, camera) in sources.into_iter().zip(&self.config.cameras) {
            let feed = Feed::start(
                source,
                &camera.name,
                delivery,
                control.shutdown.clone(),
                doorbell.clone(),
                started,
            )?;
            cameras.push(CameraRun {
                name: camera.name.clone(),
                feed,
                health: CameraHealth::new(camera.offline_after(), Duration::ZERO),
                offline_lines: Repeats::new(log_limit::EVERY),
                offline_logged: true,
                finished: false,
                min_interval: camera.min_interval(),
                next_due: None,
                last_stamp: FrameStamp {
                    seq: 0,
                    wall: SystemTime::now(),
                    now: Duration::ZERO,
                    latency_ms: 0.0,
                },
                summary: Summary::default(),
                stats: StatsWindow::new(started),
                bad_frames: Repeats::new(log_limit::EVERY),
            });
        }
        let inference_busy = Arc::new(Busy::new(started));
        let monitor = StuckMonitor::start(inference_busy.clone()).map_err(DaemonError::Thread)?;
        let capture_timeout = self
            .config
            .cameras
            .iter()
            .map(|c| c.timeout())
            .max()
            .unwrap_or(Duration::from_secs(1));
        let mut notifier = Notifier::from_env(capture_timeout);
        notifier.ready("running: waiting for the first frame");
        let mut summary = Summary::default();
        let cpu_at_start = process_cpu_seconds();
        // Each camera's zones' label scores of its last frame (for the snapshot hook, which
        // borrows the daemon whole).
        let mut zone_scores: Vec<Vec<Vec<LabelScore>>> = vec![Vec::new(); cameras.len()];
        // With a spare core, each round is preprocessed while the tower encodes the round
        // before: `ahead` is that round, taken and preprocessed, not yet encoded.
        let prepare_ahead = self.pipeline.can_prepare_ahead();
        let mut ahead: Option<Round> = None;
        let stamp = |frame: &Frame| FrameStamp {
            seq: frame.seq,
            wall: frame.captured_wall,
            now: frame.captured_at.duration_since(started),
            latency_ms: frame.captured_at.elapsed().as_secs_f32() * 1e3,
        };

        loop {
            if control.reload.swap(false, Ordering::Relaxed) {
                // A round preprocessed ahead was cut into the old zones: it is finished first.
                if let Some(round) = ahead.take() {
                    let results = timed(&inference_busy, round.frames.len(), || {
                        self.pipeline.step_ahead(&refs(&round.frames), &[], stamp)
                    });
                    self.round_done(
                        round,
                        results,
                        &mut cameras,
                        &mut zone_scores,
                        &mut sinks,
                        &mut summary,
                    );
                }
                let stamps: Vec<FrameStamp> = cameras.iter().map(|c| c.last_stamp).collect();
                let now = stamps.iter().map(|s| s.now).max().unwrap_or_default();
                let mut ends = self.reload(|c| stamps[c]);
                self.snapshot_ends(now, &mut ends);
                self.relabel_snapshots();
                self.history_events(&ends);
                publish(&mut sinks, &ends, &mut summary);
                self.announce_labels(&mut sinks);
                self.reload_web();
            }
            // One round: what each camera has, its frame when `max_fps` lets it through. The
            // health changes it shows are acted on once the round before (if one waits ahead)
            // is through, so that its events come first, as if it had gone through earlier.
            let now = Instant::now();
            let mut round = Round::default();
            let mut changes: Vec<(usize, CameraStatus)> = Vec::new();
            for (c, cam) in cameras.iter_mut().enumerate() {
                if cam.finished {
                    continue;
                }
                let taken = cam.feed.take(cam.due(now));
                if let Some((at, reason)) = taken.outage {
                    let change = cam
                        .health
                        .error(at.saturating_duration_since(started), &reason);
                    changes.extend(change.map(|s| (c, s)));
                }
                // A frame left waiting by `max_fps` is a sign of life too: a camera capped
                // below one frame per `offline_after_s` must not count as offline.
                let alive = match &taken.frame {
                    Some(f) => Some(f.captured_at),
                    None => taken.waiting,
                };
                if let Some(at) = alive {
                    let change = cam.health.frame(at.saturating_duration_since(started));
                    changes.extend(change.map(|s| (c, s)));
                }
                let change = cam.health.tick(now.saturating_duration_since(started));
                changes.extend(change.map(|s| (c, s)));
                if taken.finished {
                    cam.finished = true;
                    round.finished.push(c);
                }
                // A frame captured before the source failed is dropped: the camera is offline
                // until a newer one comes.
                if let Some(frame) = taken.frame.filter(|_| cam.health.is_online()) {
                    cam.stepped(now);
                    round.frames.push((c, frame));
                }
            }
            let busiest = cameras
                .iter()
                .filter_map(|c| c.feed.busy_for(now).map(|b| (b, c.feed.describe())))
                .max_by_key(|(b, _)| *b);
            notifier.pet(now, busiest.map(|b| b.0), busiest.map_or("", |b| b.1));

            // The round waiting ahead goes through the tower, this one is preprocessed
            // meanwhile.
            let stepped_ahead = ahead.is_some();
            if let Some(done) = ahead.take() {
                let results = timed(&inference_busy, done.frames.len(), || {
                    self.pipeline
                        .step_ahead(&refs(&done.frames), &refs(&round.frames), stamp)
                });
                self.round_done(
                    done,
                    results,
                    &mut cameras,
                    &mut zone_scores,
                    &mut sinks,
                    &mut summary,
                );
            }
            for (c, status) in changes {
                let cam = &mut cameras[c];
                self.camera_changed(c, cam, status, &mut sinks, &mut summary, &mut notifier);
            }
            if stepped_ahead {
                self.between_rounds(&mut cameras, &summary, &mut sinks, &mut notifier);
            }
            if round.frames.is_empty() {
                if control.shutdown.load(Ordering::Relaxed) || cameras.iter().all(|c| c.finished) {
                    break;
                }
                if !round.finished.is_empty() {
                    self.cameras_finished(&cameras, &round.finished, &mut sinks, &mut summary);
                    continue;
                }
                if stepped_ahead {
                    // Frames may have come during that round: no sleep.
                    continue;
                }
                if control.reload.load(Ordering::Relaxed) {
                    continue;
                }
                // Sleep until a camera rings, a capped camera's next slot, or the next poll of
                // the flags and the health clocks.
                let waiting_capped = cameras
                    .iter()
                    .filter(|c| !c.finished && !c.due(now) && c.feed.has_frame())
                    .filter_map(|c| c.next_due);
                let wake = waiting_capped.fold(now + TAKE_POLL, Instant::min);
                doorbell.wait_until(wake);
                continue;
            }
            if prepare_ahead {
                if !stepped_ahead {
                    // No round before it: preprocessed here (watched for a hang like a step).
                    timed(&inference_busy, round.frames.len(), || {
                        self.pipeline.prepare_ahead(&refs(&round.frames))
                    });
                }
                ahead = Some(round);
            } else {
                let results = timed(&inference_busy, round.frames.len(), || {
                    self.pipeline.step_round(&refs(&round.frames), stamp)
                });
                self.round_done(
                    round,
                    results,
                    &mut cameras,
                    &mut zone_scores,
                    &mut sinks,
                    &mut summary,
                );
                self.between_rounds(&mut cameras, &summary, &mut sinks, &mut notifier);
            }
        }

        control.shutdown.store(true, Ordering::Relaxed);
        notifier.stopping();
        drop(monitor);
        let mut ends = Vec::new();
        for (c, cam) in cameras.iter().enumerate() {
            ends.extend(self.pipeline.finish_camera(c, cam.last_stamp));
        }
        let last = cameras
            .iter()
            .map(|c| c.last_stamp.now)
            .max()
            .unwrap_or_default();
        self.snapshot_ends(last, &mut ends);
        self.history_events(&ends);
        publish(&mut sinks, &ends, &mut summary);
        summary.snapshots = self.finish_snapshots(&mut sinks);
        summary.store = self.finish_history();
        self.stop_web();
        for s in sinks.iter_mut() {
            if let Err(e) = s.close() {
                warn!("{}: close failed: {e}", s.name());
            }
        }
        for cam in &mut cameras {
            cam.feed.join();
        }
        let mut summary = totals(&cameras, &summary, &sinks);
        summary.wall_s = started.elapsed().as_secs_f64();
        summary.cpu_s = cpu_at_start.zip(process_cpu_seconds()).map(|(a, b)| b - a);
        if cameras.len() > 1 {
            for cam in &mut cameras {
                cam.feed.count_into(&mut cam.summary);
                let s = &cam.summary;
                info!(
                    "camera {}: {} frames captured, {} processed, {} dropped, {} bad",
                    cam.name, s.captured, s.processed, s.dropped, s.bad_frames
                );
            }
        }
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

    /// Hands a stepped round's outcome on, frame by frame: a bad frame is counted (and logged,
    /// rate-limited); a good one's events go through the web page, the store and the snapshot
    /// hooks to the sinks. Then a camera whose recording ended with this round (its last frame
    /// in it) ends its labels, while the others go on.
    fn round_done(
        &mut self,
        round: Round,
        results: Vec<Result<CameraStep, FrameError>>,
        cameras: &mut [CameraRun],
        zone_scores: &mut [Vec<Vec<LabelScore>>],
        sinks: &mut [Box<dyn EventSink>],
        summary: &mut Summary,
    ) {
        let Round { frames, finished } = round;
        for ((c, frame), result) in frames.into_iter().zip(results) {
            let cam = &mut cameras[c];
            let step = match result {
                Ok(step) => step,
                Err(e) => {
                    cam.summary.bad_frames += 1;
                    if let Some(line) = cam.bad_frames.note(&(), Instant::now()).text(&e) {
                        warn!("camera {}: {line}", cam.name);
                    }
                    continue;
                }
            };
            cam.last_stamp = step.stamp;
            let mut events = step.events;
            // A reload may have changed the camera's zones.
            zone_scores[c].resize_with(self.pipeline.zone_names(c).count(), Vec::new);
            for (z, scores) in zone_scores[c].iter_mut().enumerate() {
                scores.clear();
                scores.extend_from_slice(self.pipeline.zone_label_scores(c, z));
            }
            let frame = Arc::new(frame);
            if c == 0 {
                self.web_step(&frame, step.stamp.latency_ms, &zone_scores[0][0]);
            }
            self.history_frame(c, &frame, step.stamp, &events);
            self.snapshot_step(
                c,
                Some(&frame),
                step.stamp.now,
                &zone_scores[c],
                &mut events,
            );
            self.history_events(&events);
            publish(sinks, &events, summary);
            cam.summary.processed += 1;
            cam.summary.latency.record(step.stamp.latency_ms);
            summary.latency.record(step.stamp.latency_ms);
        }
        self.cameras_finished(cameras, &finished, sinks, summary);
    }

    /// After a round: the snapshots written meanwhile to the sinks, the web page's totals and
    /// the stats lines, when due.
    fn between_rounds(
        &mut self,
        cameras: &mut [CameraRun],
        summary: &Summary,
        sinks: &mut [Box<dyn EventSink>],
        notifier: &mut Notifier,
    ) {
        self.deliver_snapshots(sinks);
        let now = Instant::now();
        if self.web_totals_due(now) {
            let totals = totals(cameras, summary, sinks);
            self.web_totals(&totals, sinks.iter().map(|s| s.events_queued()).sum());
        }
        if let Some(every) = self.config.stats.interval() {
            self.stats_lines(cameras, every, sinks, notifier);
        }
    }

    /// The cameras in `finished` delivered their last frame (a `files:` recording that ended):
    /// their active labels end, stamped with their last frame. Only when others still run (the
    /// run's end ends every label anyway).
    fn cameras_finished(
        &mut self,
        cameras: &[CameraRun],
        finished: &[usize],
        sinks: &mut [Box<dyn EventSink>],
        summary: &mut Summary,
    ) {
        if cameras.iter().all(|c| c.finished) {
            return;
        }
        for &c in finished {
            let last = cameras[c].last_stamp;
            let mut ends = self.pipeline.finish_camera(c, last);
            self.snapshot_step(c, None, last.now, &[], &mut ends);
            self.history_events(&ends);
            publish(sinks, &ends, summary);
        }
    }

    /// Each camera's stats line when its window is due: the log, the service manager's status
    /// and the sinks (MQTT: `PREFIX/CAMERA/stats`).
    fn stats_lines(
        &mut self,
        cameras: &mut [CameraRun],
        every: Duration,
        sinks: &mut [Box<dyn EventSink>],
        notifier: &mut Notifier,
    ) {
        let now = Instant::now();
        if !cameras.iter().any(|c| c.stats.due(now, every)) {
            return;
        }
        let store = self.store_stats();
        let events_dropped = sinks.iter().map(|s| s.events_dropped()).sum();
        let many = cameras.len() > 1;
        let mut status = Vec::new();
        for cam in cameras.iter_mut() {
            cam.feed.count_into(&mut cam.summary);
            cam.summary.events_dropped = events_dropped;
            cam.summary.store = store;
            let st = cam
                .stats
                .take(&cam.name, now, SystemTime::now(), &cam.summary);
            info!(
                "stats{}: capture {:.1} fps, inference {:.1} fps, latency p50 {:.1} ms p95 {:.1} ms, dropped {} of {}{}",
                if many {
                    format!(" {}", cam.name)
                } else {
                    String::new()
                },
                st.capture_fps,
                st.inference_fps,
                st.p50_ms,
                st.p95_ms,
                st.dropped,
                st.frames,
                store_line(&st.store)
            );
            status.push(format!(
                "{}capture {:.1} fps, inference {:.1} fps",
                if many {
                    format!("{} ", cam.name)
                } else {
                    String::new()
                },
                st.capture_fps,
                st.inference_fps
            ));
            for s in sinks.iter_mut() {
                if let Err(e) = s.publish_stats(&st) {
                    warn!("{}: stats not published: {e}", s.name());
                }
            }
        }
        notifier.status(&format!("running: {}", status.join("; ")));
    }

    /// Acts on a change of camera `c`'s health: offline ends its active labels (their end
    /// events, stamped with its last frame), then every sink learns the new status.
    fn camera_changed(
        &mut self,
        c: usize,
        cam: &mut CameraRun,
        status: CameraStatus,
        sinks: &mut [Box<dyn EventSink>],
        summary: &mut Summary,
        notifier: &mut Notifier,
    ) {
        let camera = &cam.name;
        match &status {
            CameraStatus::Offline { reason } => {
                let say = cam.offline_lines.note(&(), Instant::now());
                let line = say.text(format_args!("camera {camera}: offline: {reason}"));
                cam.offline_logged = line.is_some();
                if let Some(line) = line {
                    warn!("{line}");
                }
                notifier.status(&format!("camera {camera} offline: {reason}"));
                let last = cam.last_stamp;
                let mut ends = self.pipeline.finish_camera(c, last);
                self.snapshot_step(c, None, last.now, &[], &mut ends);
                self.history_events(&ends);
                publish(sinks, &ends, summary);
            }
            CameraStatus::Online => {
                if cam.offline_logged {
                    info!("camera {camera}: online");
                }
                notifier.status("running");
            }
        }
        for s in sinks.iter_mut() {
            if let Err(e) = s.camera_status(camera, &status) {
                warn!("{}: camera status not published: {e}", s.name());
            }
        }
    }
}

/// The run's totals: every camera's capture and inference counts added up, with the events,
/// latencies and outcomes `summary` keeps for the whole run.
fn totals(cameras: &[CameraRun], summary: &Summary, sinks: &[Box<dyn EventSink>]) -> Summary {
    let mut total = summary.clone();
    total.captured = 0;
    total.processed = 0;
    total.dropped = 0;
    total.bad_frames = 0;
    total.source_errors = 0;
    for cam in cameras {
        let mut s = cam.summary.clone();
        cam.feed.count_into(&mut s);
        total.captured += s.captured;
        total.processed += s.processed;
        total.dropped += s.dropped;
        total.bad_frames += s.bad_frames;
        total.source_errors += s.source_errors;
    }
    total.events_dropped = sinks.iter().map(|s| s.events_dropped()).sum();
    total
}

/// The stats line's store part: empty when the store is off.
fn store_line(s: &StoreStats) -> String {
    if s.state == StoreState::Off {
        return String::new();
    }
    format!(
        "; store {}: {} frames, {} dropped, {} failed, {:.1} MB",
        s.state,
        s.frames,
        s.dropped,
        s.failed,
        s.bytes as f64 / 1e6
    )
}

/// The frames of a round as the pipeline takes them.
fn refs(frames: &[(usize, Frame)]) -> Vec<(usize, &Frame)> {
    frames.iter().map(|(c, f)| (*c, f)).collect()
}

/// Runs `step` (one round of `frames` frames through the tower) marked busy for the stuck
/// monitor, and warns when it took longer than [`INFERENCE_STUCK`].
fn timed<T>(busy: &Busy, frames: usize, step: impl FnOnce() -> T) -> T {
    let stepped_at = Instant::now();
    busy.enter(stepped_at);
    let out = step();
    busy.leave();
    let took = stepped_at.elapsed();
    if took >= INFERENCE_STUCK {
        warn!(
            "a round of {frames} frame(s) took {:.1} s to process (more than {} s)",
            took.as_secs_f32(),
            INFERENCE_STUCK.as_secs()
        );
    }
    out
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

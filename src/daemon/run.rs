//! The running daemon: the capture thread that moves frames from the source into the
//! [`Mailbox`], and the inference loop that takes them out, with its stats line and summary.
//!
//! The loop also keeps the camera's health ([`CameraHealth`]: a failing source or no frame for
//! `camera.offline_after_s` is offline; active labels end and the sinks learn it) and talks to
//! the service manager ([`Notifier`]: ready, status, the watchdog). Repeated source warnings are
//! rate-limited ([`Repeats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::health::CameraHealth;
use super::stats::{StatsWindow, process_cpu_seconds};
use super::watchdog::{Busy, INFERENCE_STUCK, Notifier, StuckMonitor};
use super::{Control, Daemon, DaemonError, Delivery, Summary};
use crate::event::{Event, StoreState, StoreStats};
use crate::frame::Frame;
use crate::log_limit::{self, Repeats};
use crate::mailbox::{Mailbox, Shared};
use crate::sink::{CameraStatus, EventSink};
use crate::source::{FrameSource, SourceError};
use crate::trigger::{FrameStamp, LabelScore};

/// What the capture thread counts besides the mailbox's own counts, under the same lock.
#[derive(Debug, Default)]
struct Capture {
    /// Errors the source reported.
    source_errors: u64,
    /// Frames the source dropped itself ([`FrameSource::dropped`]).
    source_dropped: u64,
    /// The newest source failure that means the camera is offline, not yet seen by the loop:
    /// when it happened and the error.
    outage: Option<(Instant, String)>,
}

type FrameMailbox = Mailbox<Frame, Capture>;

/// How often the inference loop re-checks the shutdown and reload flags while it waits for a
/// frame (signal handlers set them without waking it).
const TAKE_POLL: Duration = Duration::from_millis(100);

impl Capture {
    /// The run's totals so far: frames delivered (`captured`), dropped in the source and in the
    /// mailbox (`dropped`), and the source's errors.
    fn count_into(shared: &Shared<Frame, Capture>, summary: &mut Summary) {
        summary.captured = shared.slot().put_count();
        summary.dropped = shared.slot().dropped() + shared.extra.source_dropped;
        summary.source_errors = shared.extra.source_errors;
    }
}

/// The kind of a source error, for rate-limited logging, and whether it means that the camera
/// is offline (a timeout does not by itself: `camera.offline_after_s` decides; a corrupt frame
/// or an unreadable file does not: the camera delivers).
fn classify(e: &SourceError) -> (&'static str, bool) {
    match e {
        SourceError::PipeExited { .. } => ("exited", true),
        SourceError::Spawn { .. } => ("spawn", true),
        SourceError::PipeRead { .. } => ("read", true),
        SourceError::Device { .. } => ("device", true),
        SourceError::Timeout { .. } => ("timeout", false),
        SourceError::CorruptFrame { .. } | SourceError::BadImage { .. } => ("bad frame", false),
        SourceError::ReadFile { .. } => ("file", false),
        SourceError::NoFiles { .. }
        | SourceError::Glob { .. }
        | SourceError::Format { .. }
        | SourceError::Unsupported { .. }
        | SourceError::Stopped { .. } => ("fatal", true),
    }
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mailbox: Arc<FrameMailbox>,
    delivery: Delivery,
    shutdown: Arc<AtomicBool>,
    busy: Arc<Busy>,
) {
    info!("capturing from {}", source.describe());
    let mut source_dropped = 0;
    let mut repeats = Repeats::new(log_limit::EVERY);
    while !shutdown.load(Ordering::Relaxed) {
        busy.enter(Instant::now());
        let next = source.next_frame();
        busy.leave();
        let now = Instant::now();
        for (kind, count, over) in repeats.due(now) {
            warn!(
                "{}: {kind} errors repeated {count} more times in the last {} s",
                source.describe(),
                over.as_secs()
            );
        }
        // The source's drop count changes rarely; the lock is only taken when it did.
        let dropped = source.dropped();
        if dropped != source_dropped {
            source_dropped = dropped;
            mailbox.lock().extra.source_dropped = dropped;
        }
        match next {
            Ok(Some(frame)) => {
                mailbox.put(frame, delivery, || shutdown.load(Ordering::Relaxed));
            }
            Ok(None) => {
                info!("{}: no more frames", source.describe());
                break;
            }
            Err(e) => {
                let (kind, outage) = classify(&e);
                {
                    let mut m = mailbox.lock();
                    m.extra.source_errors += 1;
                    if outage {
                        m.extra.outage = Some((now, e.to_string()));
                    }
                }
                if outage {
                    mailbox.notify();
                }
                if let Some(line) = repeats.note(&kind, now).text(&e) {
                    warn!("{}: {line}", source.describe());
                }
                // Sources back off themselves; this only keeps a tight error loop from spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    mailbox.close();
}

impl Daemon {
    /// Runs until the source finishes or `control.shutdown` is set.
    pub fn run(
        mut self,
        source: Box<dyn FrameSource>,
        mut sinks: Vec<Box<dyn EventSink>>,
        control: &Control,
        delivery: Delivery,
    ) -> Result<Summary, DaemonError> {
        self.start_web(&mut sinks)?;
        let started = Instant::now();
        let describe = source.describe();
        let mailbox = Arc::new(FrameMailbox::default());
        let capture_busy = Arc::new(Busy::new(started));
        let capture = {
            let mailbox = mailbox.clone();
            let shutdown = control.shutdown.clone();
            let busy = capture_busy.clone();
            std::thread::Builder::new()
                .name("edgeclip-capture".into())
                .spawn(move || capture_loop(source, mailbox, delivery, shutdown, busy))
                .map_err(DaemonError::Thread)?
        };
        let inference_busy = Arc::new(Busy::new(started));
        let monitor = StuckMonitor::start(inference_busy.clone()).map_err(DaemonError::Thread)?;
        let mut watch = Watch {
            health: CameraHealth::new(self.config.camera.offline_after(), Duration::ZERO),
            notifier: Notifier::from_env(self.config.camera.timeout()),
            offline_lines: Repeats::new(log_limit::EVERY),
            offline_logged: true,
        };
        watch.notifier.ready("running: waiting for the first frame");
        let mut summary = Summary::default();
        let cpu_at_start = process_cpu_seconds();
        let mut label_scores: Vec<LabelScore> = Vec::with_capacity(self.config.prompts.len());
        let mut stats = StatsWindow::new(started);
        let stats_every = self.config.stats.interval();
        let mut bad_frames = Repeats::new(log_limit::EVERY);
        let mut last_stamp = FrameStamp {
            seq: 0,
            wall: SystemTime::now(),
            now: Duration::ZERO,
            latency_ms: 0.0,
        };

        loop {
            if control.reload.swap(false, Ordering::Relaxed) {
                let mut ends = self.reload(last_stamp);
                self.snapshot_step(None, last_stamp.now, &[], &mut ends);
                self.history_events(&ends);
                publish(&mut sinks, &ends, &mut summary);
                self.announce_labels(&mut sinks);
                self.reload_web();
            }
            // Wakes for a frame, a source failure or the end, and at least every TAKE_POLL (the
            // flags are set without waking it; the health clock and the watchdog need turns).
            let taken = mailbox.wait_for(Some(Instant::now() + TAKE_POLL), None, |s| {
                let frame = s.take();
                let end = frame.is_none()
                    && (s.is_closed()
                        || control.shutdown.load(Ordering::Relaxed)
                        || control.reload.load(Ordering::Relaxed));
                let outage = s.extra.outage.take();
                (frame.is_some() || end || outage.is_some()).then_some((outage, frame, end))
            });
            let (outage, frame, end) = taken.unwrap_or((None, None, false));
            let now = Instant::now();
            if let Some((at, reason)) = outage {
                let change = watch
                    .health
                    .error(at.saturating_duration_since(started), &reason);
                self.camera_changed(change, last_stamp, &mut sinks, &mut summary, &mut watch);
            }
            if let Some(f) = &frame {
                let change = watch
                    .health
                    .frame(f.captured_at.saturating_duration_since(started));
                self.camera_changed(change, last_stamp, &mut sinks, &mut summary, &mut watch);
            }
            let change = watch.health.tick(now.saturating_duration_since(started));
            self.camera_changed(change, last_stamp, &mut sinks, &mut summary, &mut watch);
            watch
                .notifier
                .pet(now, capture_busy.running_for(now), &describe);
            if end {
                if control.reload.load(Ordering::Relaxed) {
                    continue;
                }
                break;
            }
            // Nothing yet, or a frame captured before the source failed (dropped: the camera is
            // offline until a newer one comes).
            let Some(frame) = frame.filter(|_| watch.health.is_online()) else {
                continue;
            };
            let stepped_at = Instant::now();
            inference_busy.enter(stepped_at);
            let step = self.pipeline.step(&frame, || FrameStamp {
                seq: frame.seq,
                wall: frame.captured_wall,
                now: frame.captured_at.duration_since(started),
                latency_ms: frame.captured_at.elapsed().as_secs_f32() * 1e3,
            });
            inference_busy.leave();
            let took = stepped_at.elapsed();
            if took >= INFERENCE_STUCK {
                warn!(
                    "frame {} took {:.1} s to process (more than {} s)",
                    frame.seq,
                    took.as_secs_f32(),
                    INFERENCE_STUCK.as_secs()
                );
            }
            let (mut events, latency_ms) = match step {
                Ok(step) => {
                    last_stamp = step.stamp;
                    (step.events, step.stamp.latency_ms)
                }
                Err(e) => {
                    summary.bad_frames += 1;
                    if let Some(line) = bad_frames.note(&(), now).text(&e) {
                        warn!("{line}");
                    }
                    continue;
                }
            };
            // The snapshot hook borrows the daemon whole: the scores go through a reused buffer.
            label_scores.clear();
            label_scores.extend_from_slice(self.pipeline.label_scores());
            self.web_step(&frame, latency_ms, &label_scores);
            self.history_frame(&frame, last_stamp, &events);
            self.snapshot_step(Some(frame), last_stamp.now, &label_scores, &mut events);
            self.history_events(&events);
            publish(&mut sinks, &events, &mut summary);
            self.deliver_snapshots(&mut sinks);
            summary.processed += 1;
            summary.latency.record(latency_ms);
            if self.web_totals_due(Instant::now()) {
                Capture::count_into(&mailbox.lock(), &mut summary);
                summary.events_dropped = sinks.iter().map(|s| s.events_dropped()).sum();
                self.web_totals(&summary, sinks.iter().map(|s| s.events_queued()).sum());
            }
            if let Some(every) = stats_every {
                let now = Instant::now();
                if stats.due(now, every) {
                    Capture::count_into(&mailbox.lock(), &mut summary);
                    summary.events_dropped = sinks.iter().map(|s| s.events_dropped()).sum();
                    summary.store = self.store_stats();
                    let st = stats.take(&self.config.camera.name, now, SystemTime::now(), &summary);
                    info!(
                        "stats: capture {:.1} fps, inference {:.1} fps, latency p50 {:.1} ms p95 {:.1} ms, dropped {} of {}{}",
                        st.capture_fps,
                        st.inference_fps,
                        st.p50_ms,
                        st.p95_ms,
                        st.dropped,
                        st.frames,
                        store_line(&st.store)
                    );
                    watch.notifier.status(&format!(
                        "running: capture {:.1} fps, inference {:.1} fps",
                        st.capture_fps, st.inference_fps
                    ));
                    for s in sinks.iter_mut() {
                        if let Err(e) = s.publish_stats(&st) {
                            warn!("{}: stats not published: {e}", s.name());
                        }
                    }
                }
            }
        }

        control.shutdown.store(true, Ordering::Relaxed);
        watch.notifier.stopping();
        drop(monitor);
        let mut ends = self.pipeline.finish(last_stamp);
        self.snapshot_step(None, last_stamp.now, &[], &mut ends);
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
        if capture.join().is_err() {
            warn!("the capture thread panicked");
        }
        Capture::count_into(&mailbox.lock(), &mut summary);
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

/// The camera's health and what the loop says about itself: the log and the service manager.
/// The offline line is rate-limited (a camera that flaps, a command that delivers one frame
/// and exits, is logged once a minute with a count), and an online line is logged when the
/// offline line before it was.
struct Watch {
    health: CameraHealth,
    notifier: Notifier,
    offline_lines: Repeats<()>,
    /// The last offline line was logged (true at the start: the first online is).
    offline_logged: bool,
}

impl Daemon {
    /// Acts on a change of the camera's health: offline ends the active labels (their end
    /// events, stamped with the last frame), then every sink learns the new status.
    fn camera_changed(
        &mut self,
        change: Option<CameraStatus>,
        last: FrameStamp,
        sinks: &mut [Box<dyn EventSink>],
        summary: &mut Summary,
        watch: &mut Watch,
    ) {
        let Some(status) = change else {
            return;
        };
        let camera = &self.config.camera.name;
        match &status {
            CameraStatus::Offline { reason } => {
                let say = watch.offline_lines.note(&(), Instant::now());
                let line = say.text(format_args!("camera {camera}: offline: {reason}"));
                watch.offline_logged = line.is_some();
                if let Some(line) = line {
                    warn!("{line}");
                }
                watch.notifier.status(&format!("camera offline: {reason}"));
                let mut ends = self.pipeline.finish(last);
                self.snapshot_step(None, last.now, &[], &mut ends);
                self.history_events(&ends);
                publish(sinks, &ends, summary);
            }
            CameraStatus::Online => {
                if watch.offline_logged {
                    info!("camera {camera}: online");
                }
                watch.notifier.status("running");
            }
        }
        for s in sinks.iter_mut() {
            if let Err(e) = s.camera_status(&status) {
                warn!("{}: camera status not published: {e}", s.name());
            }
        }
    }
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

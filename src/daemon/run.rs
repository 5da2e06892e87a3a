//! The running daemon: the capture thread that moves frames from the source into the
//! [`Mailbox`], and the inference loop that takes them out, with its stats line and summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};

use super::stats::{StatsWindow, process_cpu_seconds};
use super::{Control, Daemon, DaemonError, Delivery, Summary};
use crate::event::Event;
use crate::frame::Frame;
use crate::mailbox::{Mailbox, Shared};
use crate::sink::EventSink;
use crate::source::FrameSource;
use crate::trigger::{FrameStamp, LabelScore};

/// What the capture thread counts besides the mailbox's own counts, under the same lock.
#[derive(Debug, Default)]
struct Capture {
    /// Errors the source reported.
    source_errors: u64,
    /// Frames the source dropped itself ([`FrameSource::dropped`]).
    source_dropped: u64,
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

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mailbox: Arc<FrameMailbox>,
    delivery: Delivery,
    shutdown: Arc<AtomicBool>,
) {
    info!("capturing from {}", source.describe());
    let mut source_dropped = 0;
    while !shutdown.load(Ordering::Relaxed) {
        let next = source.next_frame();
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
                mailbox.lock().extra.source_errors += 1;
                warn!("{}: {e}", source.describe());
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
        let mailbox = Arc::new(FrameMailbox::default());
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
                let mut ends = self.reload(last_stamp);
                self.snapshot_step(None, last_stamp.now, &[], &mut ends);
                publish(&mut sinks, &ends, &mut summary);
                self.announce_labels(&mut sinks);
            }
            let taken = mailbox.wait_for(None, Some(TAKE_POLL), |s| match s.take() {
                Some(f) => Some(Some(f)),
                None if s.is_closed()
                    || control.shutdown.load(Ordering::Relaxed)
                    || control.reload.load(Ordering::Relaxed) =>
                {
                    Some(None)
                }
                None => None,
            });
            let Ok(Some(frame)) = taken else {
                if control.reload.load(Ordering::Relaxed) {
                    continue;
                }
                break;
            };
            let step = self.pipeline.step(&frame, || FrameStamp {
                seq: frame.seq,
                wall: frame.captured_wall,
                now: frame.captured_at.duration_since(started),
                latency_ms: frame.captured_at.elapsed().as_secs_f32() * 1e3,
            });
            let (mut events, latency_ms) = match step {
                Ok(step) => {
                    last_stamp = step.stamp;
                    (step.events, step.stamp.latency_ms)
                }
                Err(e) => {
                    summary.bad_frames += 1;
                    warn!("{e}");
                    continue;
                }
            };
            // The snapshot hook borrows the daemon whole: the scores go through a reused buffer.
            label_scores.clear();
            label_scores.extend_from_slice(self.pipeline.label_scores());
            self.snapshot_step(Some(frame), last_stamp.now, &label_scores, &mut events);
            publish(&mut sinks, &events, &mut summary);
            self.deliver_snapshots(&mut sinks);
            summary.processed += 1;
            summary.latency.record(latency_ms);
            if let Some(every) = stats_every {
                let now = Instant::now();
                if stats.due(now, every) {
                    Capture::count_into(&mailbox.lock(), &mut summary);
                    summary.events_dropped = sinks.iter().map(|s| s.events_dropped()).sum();
                    let st = stats.take(&self.config.camera.name, now, SystemTime::now(), &summary);
                    info!(
                        "stats: capture {:.1} fps, inference {:.1} fps, latency p50 {:.1} ms p95 {:.1} ms, dropped {} of {}",
                        st.capture_fps,
                        st.inference_fps,
                        st.p50_ms,
                        st.p95_ms,
                        st.dropped,
                        st.frames
                    );
                    for s in sinks.iter_mut() {
                        if let Err(e) = s.publish_stats(&st) {
                            warn!("{}: stats not published: {e}", s.name());
                        }
                    }
                }
            }
        }

        control.shutdown.store(true, Ordering::Relaxed);
        let mut ends = self.pipeline.finish(last_stamp);
        self.snapshot_step(None, last_stamp.now, &[], &mut ends);
        publish(&mut sinks, &ends, &mut summary);
        summary.snapshots = self.finish_snapshots(&mut sinks);
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

//! The capture side of the daemon: one thread per camera moving frames from its source into its
//! own one-slot [`Mailbox`], and the [`Doorbell`] they all ring, so that the inference loop
//! sleeps until any camera has something for it.
//!
//! ```text
//! camera 0 thread: source.next_frame() ──> Mailbox 0 ─┐
//! camera 1 thread: source.next_frame() ──> Mailbox 1 ─┼─ ring ──> Doorbell ──> inference loop
//! camera N thread: ...                                 ┘
//! ```
//!
//! A newer frame replaces an unread one in its camera's mailbox (counted as dropped), so nothing
//! queues without bound and a slow model sees each camera's freshest frame.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::watchdog::Busy;
use super::{DaemonError, Delivery, Summary};
use crate::frame::Frame;
use crate::log_limit::{self, Repeats};
use crate::mailbox::{Mailbox, Shared};
use crate::source::{FrameSource, SourceError};

/// What the capture thread counts besides the mailbox's own counts, under the same lock.
#[derive(Debug, Default)]
pub(super) struct Capture {
    /// Errors the source reported.
    source_errors: u64,
    /// Frames the source dropped itself ([`FrameSource::dropped`]).
    source_dropped: u64,
    /// The newest source failure that means the camera is offline, not yet seen by the loop:
    /// when it happened and the error.
    outage: Option<(Instant, String)>,
}

type FrameMailbox = Mailbox<Frame, Capture>;

impl Capture {
    /// The camera's totals so far: frames delivered (`captured`), dropped in the source and in
    /// the mailbox (`dropped`), and the source's errors.
    fn count_into(shared: &Shared<Frame, Capture>, summary: &mut Summary) {
        summary.captured = shared.slot().put_count();
        summary.dropped = shared.slot().dropped() + shared.extra.source_dropped;
        summary.source_errors = shared.extra.source_errors;
    }
}

/// Wakes the inference loop when any camera put a frame, failed or finished. A ring between two
/// waits is not lost: the next wait returns at once.
#[derive(Debug, Default)]
pub(super) struct Doorbell {
    rung: Mutex<bool>,
    changed: Condvar,
}

impl Doorbell {
    /// Wakes the waiter (or the next one).
    pub(super) fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_one();
    }

    /// Waits until rung or until `deadline`, and clears the ring.
    pub(super) fn wait_until(&self, deadline: Instant) {
        let mut rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        while !*rung {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            rung = self
                .changed
                .wait_timeout(rung, deadline - now)
                .map(|r| r.0)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *rung = false;
    }
}

/// What the loop took from one camera's mailbox.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// A source failure that makes the camera offline: when and why.
    pub(super) outage: Option<(Instant, String)>,
    /// The freshest frame, when one was waiting and the loop asked for it.
    pub(super) frame: Option<Frame>,
    /// The source finished and its mailbox is empty.
    pub(super) finished: bool,
    /// When the frame that waits was captured, if the loop did not ask for it (the camera is
    /// held back by `max_fps`).
    pub(super) waiting: Option<Instant>,
}

/// One camera's capture thread and mailbox.
pub(super) struct Feed {
    mailbox: Arc<FrameMailbox>,
    busy: Arc<Busy>,
    describe: String,
    thread: Option<JoinHandle<()>>,
}

impl Feed {
    /// Starts the capture thread of `source`.
    pub(super) fn start(
        source: Box<dyn FrameSource>,
        camera: &str,
        delivery: Delivery,
        shutdown: Arc<AtomicBool>,
        doorbell: Arc<Doorbell>,
        started: Instant,
    ) -> Result<Feed, DaemonError> {
        let mailbox = Arc::new(FrameMailbox::default());
        let busy = Arc::new(Busy::new(started));
        let describe = source.describe();
        let thread = {
            let mailbox = mailbox.clone();
            let busy = busy.clone();
            std::thread::Builder::new()
                .name(format!("capture-{camera}"))
                .spawn(move || {
                    capture_loop(source, &mailbox, delivery, &shutdown, &busy, &doorbell)
                })
                .map_err(DaemonError::Thread)?
        };
        Ok(Feed {
            mailbox,
            busy,
            describe,
            thread: Some(thread),
        })
    }

    /// What the source is, for messages.
    pub(super) fn describe(&self) -> &str {
        &self.describe
    }

    /// How long the source has been inside `next_frame`, if it is.
    pub(super) fn busy_for(&self, now: Instant) -> Option<Duration> {
        self.busy.running_for(now)
    }

    /// Takes what is waiting without blocking: the outage always, the frame only when `frame`
    /// (a camera held back by its `max_fps` leaves it, to be replaced by a fresher one).
    pub(super) fn take(&self, frame: bool) -> Taken {
        self.mailbox
            .wait_for(Some(Instant::now()), None, |s| {
                let taken = Taken {
                    frame: if frame { s.take() } else { None },
                    outage: s.extra.outage.take(),
                    finished: s.is_closed() && !s.slot().is_full(),
                    waiting: s.slot().peek().map(|f| f.captured_at),
                };
                Some(taken)
            })
            .unwrap_or_default()
    }

    /// Whether a frame waits.
    pub(super) fn has_frame(&self) -> bool {
        self.mailbox.lock().slot().is_full()
    }

    /// The camera's capture totals into `summary`.
    pub(super) fn count_into(&self, summary: &mut Summary) {
        Capture::count_into(&self.mailbox.lock(), summary);
    }

    /// Waits for the capture thread to end (the shutdown flag is set first).
    pub(super) fn join(&mut self) {
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("the capture thread of {} panicked", self.describe);
        }
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
    mailbox: &FrameMailbox,
    delivery: Delivery,
    shutdown: &AtomicBool,
    busy: &Busy,
    doorbell: &Doorbell,
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
                doorbell.ring();
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
                    doorbell.ring();
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
    doorbell.ring();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_before_the_wait_is_not_lost_and_is_used_once() {
        let bell = Doorbell::default();
        bell.ring();
        let t = Instant::now();
        bell.wait_until(t + Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(5), "returned on the ring");
        // The ring was cleared: the next wait lasts until its deadline.
        let t = Instant::now();
        bell.wait_until(t + Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_ring_from_another_thread_wakes_the_waiter() {
        let bell = Arc::new(Doorbell::default());
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            })
        };
        let t = Instant::now();
        bell.wait_until(t + Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(10));
        ringer.join().unwrap();
    }
}

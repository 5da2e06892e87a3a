//! What a service manager needs to watch the daemon and restart a broken one: systemd's
//! notification protocol (`Type=notify`: `READY=1`, `STATUS=`, `WATCHDOG=1`, `STOPPING=1`, through
//! the `sd-notify` crate, a no-op without `$NOTIFY_SOCKET`), progress stamps that tell a hung
//! inference or capture from a slow one, and the panic policy.
//!
//! The watchdog is petted from the frame loop only, and only while the capture thread is not
//! stuck inside one `next_frame` call (sources time out by themselves, so one that does not
//! return is hung): a hung loop or capture stops the petting, and systemd (`WatchdogSec=`)
//! kills and restarts the daemon. A frame whose inference runs longer than [`INFERENCE_STUCK`]
//! is reported in the log by a small monitor thread while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// One frame's inference running longer than this is reported in the log (the watchdog does
/// the rest once `WatchdogSec=` passes without progress).
pub const INFERENCE_STUCK: Duration = Duration::from_secs(10);

/// Slack over twice the capture timeout before a `next_frame` call that has not returned counts
/// as hung (a V4L2 source may sleep up to 10 s of reopen backoff inside it, a `files:` source
/// one frame interval).
pub const CAPTURE_SLACK: Duration = Duration::from_secs(30);

/// Exit status of a process ended by [`exit_on_panic`]'s hook (Rust's own for a panicking main).
pub const PANIC_EXIT: i32 = 101;

/// When something started that has not finished yet: set on entry, cleared on exit, read by
/// other threads without a lock.
#[derive(Debug)]
pub struct Busy {
    base: Instant,
    /// Nanoseconds from `base` to the start, plus one; 0 when idle.
    since: AtomicU64,
}

impl Busy {
    /// Idle, timed from `base`.
    pub fn new(base: Instant) -> Self {
        Busy {
            base,
            since: AtomicU64::new(0),
        }
    }

    /// It starts now.
    pub fn enter(&self, now: Instant) {
        let ns = now.saturating_duration_since(self.base).as_nanos() as u64;
        self.since.store(ns.saturating_add(1), Ordering::Relaxed);
    }

    /// It finished.
    pub fn leave(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// How long it has been running at `now`; `None` when idle.
    pub fn running_for(&self, now: Instant) -> Option<Duration> {
        let v = self.since.load(Ordering::Relaxed);
        (v != 0).then(|| {
            let start = self.base + Duration::from_nanos(v - 1);
            now.saturating_duration_since(start)
        })
    }

    /// The raw start stamp (0 when idle), to tell one run from the next.
    fn stamp(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }
}

/// When the watchdog is petted: at most every quarter of `WatchdogSec=` (so always well within
/// half of it while the loop makes progress), and not while the capture is hung. Pure.
#[derive(Debug, Clone)]
pub struct PetSchedule {
    every: Duration,
    capture_bound: Duration,
    last: Option<Instant>,
}

/// What the frame loop should do about the watchdog now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pet {
    /// Send `WATCHDOG=1`.
    Now,
    /// Nothing yet.
    NotYet,
    /// The capture is hung (one `next_frame` has run for this long): do not pet.
    CaptureHung(Duration),
}

impl PetSchedule {
    /// For a watchdog of `watchdog` (`WatchdogSec=`), a capture call hung after `capture_bound`.
    pub fn new(watchdog: Duration, capture_bound: Duration) -> Self {
        PetSchedule {
            every: watchdog / 4,
            capture_bound,
            last: None,
        }
    }

    /// At `now`, with the capture thread inside `next_frame` for `capture_busy` (if it is).
    pub fn check(&mut self, now: Instant, capture_busy: Option<Duration>) -> Pet {
        if let Some(busy) = capture_busy.filter(|b| *b >= self.capture_bound) {
            return Pet::CaptureHung(busy);
        }
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => Pet::NotYet,
            _ => {
                self.last = Some(now);
                Pet::Now
            }
        }
    }
}

/// The daemon's side of systemd's notification protocol; every call is a no-op without
/// `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`).
#[derive(Debug)]
pub struct Notifier {
    schedule: Option<PetSchedule>,
    /// A send error was logged (only the first is).
    failed: bool,
    /// The capture hang was logged (once per hang).
    hang_logged: bool,
}

impl Notifier {
    /// Reads `$WATCHDOG_USEC` (and `$WATCHDOG_PID`); `capture_timeout` is `camera.timeout_s`.
    pub fn from_env(capture_timeout: Duration) -> Self {
        let bound = capture_timeout * 2 + CAPTURE_SLACK;
        let watchdog = sd_notify::watchdog_enabled();
        let schedule = watchdog.map(|w| PetSchedule::new(w, bound));
        if let Some(w) = watchdog {
            log::info!(
                "watchdog: {:.1} s; a frame's inference is reported after {} s, a capture call \
                 counts as hung after {} s",
                w.as_secs_f32(),
                INFERENCE_STUCK.as_secs(),
                bound.as_secs()
            );
        }
        Notifier {
            schedule,
            failed: false,
            hang_logged: false,
        }
    }

    fn send(&mut self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states)
            && !std::mem::replace(&mut self.failed, true)
        {
            log::warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
        }
    }

    /// `READY=1` with a status line: the model is loaded, the sinks are open.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line (`systemctl status` shows it).
    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Called by the frame loop on every turn: pets the watchdog when due, unless the capture
    /// thread has been inside one `next_frame` call for too long (then logs it, once per hang).
    pub fn pet(&mut self, now: Instant, capture_busy: Option<Duration>, source: &str) {
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        match schedule.check(now, capture_busy) {
            Pet::Now => {
                self.hang_logged = false;
                self.send(&[NotifyState::Watchdog]);
            }
            Pet::NotYet => {}
            Pet::CaptureHung(busy) => {
                if !std::mem::replace(&mut self.hang_logged, true) {
                    log::error!(
                        "{source}: the capture has been stuck in one call for {:.0} s; no longer \
                         petting the watchdog, so the service manager restarts the daemon",
                        busy.as_secs_f32()
                    );
                }
            }
        }
    }
}

/// A thread that logs a frame whose inference runs longer than [`INFERENCE_STUCK`], once per
/// frame, while it still runs (the frame loop cannot: it is the one stuck).
#[derive(Debug)]
pub struct StuckMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StuckMonitor {
    /// Watches `inference` (entered by the loop around each frame's step).
    pub fn start(inference: Arc<Busy>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("edgeclip-watch".into())
                .spawn(move || {
                    let mut reported = 0;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(Duration::from_secs(1));
                        let stamp = inference.stamp();
                        let running = inference.running_for(Instant::now());
                        if let Some(d) = running.filter(|d| *d >= INFERENCE_STUCK)
                            && stamp != reported
                        {
                            reported = stamp;
                            log::error!(
                                "inference stuck: one frame has run for {:.0} s (more than {} s); \
                                 under systemd the watchdog restarts the daemon if it never ends",
                                d.as_secs_f32(),
                                INFERENCE_STUCK.as_secs()
                            );
                        }
                    }
                })?
        };
        Ok(StuckMonitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StuckMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Makes a panic on any thread end the process with status [`PANIC_EXIT`], after the default
/// report (message, location, backtrace with `RUST_BACKTRACE`) and an error line in the log, so
/// that a service manager restarts it (`Restart=on-failure`) instead of leaving a daemon with a
/// dead capture, MQTT or snapshot thread running. The one panic the crate catches on purpose
/// (tract-cuda's failure to start CUDA, see `model::panic_is_caught`) unwinds as before.
///
/// A hook rather than `panic = "abort"` in the release profile: abort would also kill that CUDA
/// fallback, and debug builds (the tests, the fault suite) would behave otherwise than release
/// builds. Installed by the binary's `main` only, so in-process tests still see panics unwind.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        if crate::model::panic_is_caught() {
            return;
        }
        let thread = std::thread::current();
        log::error!(
            "thread '{}' panicked: exiting with status {PANIC_EXIT} so that the service manager \
             restarts edgeclip",
            thread.name().unwrap_or("unnamed")
        );
        std::process::exit(PANIC_EXIT);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn petted_at_once_then_every_quarter_of_the_watchdog() {
        let t0 = Instant::now();
        let mut p = PetSchedule::new(s(30), s(40));
        assert_eq!(p.check(t0, None), Pet::Now);
        assert_eq!(p.check(t0 + Duration::from_millis(7499), None), Pet::NotYet);
        assert_eq!(p.check(t0 + Duration::from_millis(7500), None), Pet::Now);
        // A capture call in progress but within its bound does not matter.
        assert_eq!(p.check(t0 + s(16), Some(s(39))), Pet::Now);
    }

    #[test]
    fn a_hung_capture_stops_the_petting_until_it_returns() {
        let t0 = Instant::now();
        let mut p = PetSchedule::new(s(30), s(40));
        assert_eq!(p.check(t0, None), Pet::Now);
        assert_eq!(p.check(t0 + s(10), Some(s(40))), Pet::CaptureHung(s(40)));
        assert_eq!(p.check(t0 + s(20), Some(s(50))), Pet::CaptureHung(s(50)));
        assert_eq!(p.check(t0 + s(21), None), Pet::Now);
    }

    #[test]
    fn busy_tells_how_long_the_current_run_has_lasted() {
        let t0 = Instant::now();
        let b = Busy::new(t0);
        assert_eq!(b.running_for(t0 + s(5)), None);
        b.enter(t0);
        assert_eq!(b.running_for(t0 + s(5)), Some(s(5)));
        let first = b.stamp();
        b.leave();
        assert_eq!(b.running_for(t0 + s(6)), None);
        b.enter(t0 + s(7));
        assert_eq!(b.running_for(t0 + s(8)), Some(s(1)));
        assert_ne!(b.stamp(), first, "each run has its own stamp");
    }
}

//! Whether the camera is online, decided from what the capture side reports: a frame captured
//! at a time, a source failure at a time (the pipe command died and is restarting, the V4L2
//! device failed), or nothing for `camera.offline_after_s`.
//!
//! A pure state machine in the shape of `trigger`: nothing here reads a clock, times are
//! durations since the run started. The daemon's loop feeds it and acts on the changes it
//! returns (ends the active labels, tells the sinks); each change is returned once.
//!
//! A frame captured before the failure that made the camera offline (it waited in a mailbox
//! while the command died) does not bring it back: only a frame captured after it does.

use std::time::Duration;

use crate::sink::CameraStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No frame yet since the start.
    Waiting,
    Online,
    Offline {
        /// When it went offline.
        since: Duration,
    },
}

/// The camera's health (see the module docs).
#[derive(Debug, Clone)]
pub struct CameraHealth {
    offline_after: Duration,
    state: State,
    /// The capture time of the newest frame, or the start while there was none.
    last_frame: Duration,
}

impl CameraHealth {
    /// A camera that has delivered nothing yet at `start`; it goes offline when no frame comes
    /// for `offline_after` (from `start`, then from each frame).
    pub fn new(offline_after: Duration, start: Duration) -> Self {
        CameraHealth {
            offline_after,
            state: State::Waiting,
            last_frame: start,
        }
    }

    /// Whether frames arrive (false before the first frame too).
    pub fn is_online(&self) -> bool {
        self.state == State::Online
    }

    /// A frame captured at `at`. Returns `Online` when that is a change (the first frame, or
    /// the first frame captured after going offline).
    pub fn frame(&mut self, at: Duration) -> Option<CameraStatus> {
        if let State::Offline { since } = self.state
            && at <= since
        {
            return None;
        }
        self.last_frame = self.last_frame.max(at);
        if self.state == State::Online {
            return None;
        }
        self.state = State::Online;
        Some(CameraStatus::Online)
    }

    /// The source failed at `at` (`reason`: its error). Returns `Offline` when that is a change.
    pub fn error(&mut self, at: Duration, reason: &str) -> Option<CameraStatus> {
        self.go_offline(at, || reason.to_owned())
    }

    /// Time passes: `Offline` when no frame came for `offline_after` and that is a change.
    pub fn tick(&mut self, now: Duration) -> Option<CameraStatus> {
        if now.saturating_sub(self.last_frame) < self.offline_after {
            return None;
        }
        let after = self.offline_after;
        self.go_offline(now, || format!("no frame for {} s", after.as_secs_f32()))
    }

    fn go_offline(
        &mut self,
        at: Duration,
        reason: impl FnOnce() -> String,
    ) -> Option<CameraStatus> {
        if matches!(self.state, State::Offline { .. }) {
            return None;
        }
        self.state = State::Offline { since: at };
        Some(CameraStatus::Offline { reason: reason() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f32) -> Duration {
        Duration::from_secs_f32(secs)
    }

    fn offline(reason: &str) -> Option<CameraStatus> {
        Some(CameraStatus::Offline {
            reason: reason.into(),
        })
    }

    #[test]
    fn online_with_the_first_frame_once() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        assert!(!h.is_online());
        assert_eq!(h.tick(s(1.0)), None);
        assert_eq!(h.frame(s(1.5)), Some(CameraStatus::Online));
        assert!(h.is_online());
        for i in 2..100 {
            assert_eq!(h.frame(s(i as f32 * 0.1 + 1.5)), None);
            assert_eq!(h.tick(s(i as f32 * 0.1 + 1.6)), None);
        }
    }

    #[test]
    fn no_frame_for_offline_after_is_offline_once_then_back_with_a_frame() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        h.frame(s(1.0));
        assert_eq!(h.tick(s(10.9)), None);
        assert_eq!(h.tick(s(11.0)), offline("no frame for 10 s"));
        assert!(!h.is_online());
        assert_eq!(h.tick(s(12.0)), None, "once per change");
        assert_eq!(h.tick(s(100.0)), None);
        assert_eq!(h.error(s(101.0), "exited"), None, "already offline");
        assert_eq!(h.frame(s(102.0)), Some(CameraStatus::Online));
        // The timer runs from the new frame.
        assert_eq!(h.tick(s(111.9)), None);
        assert_eq!(h.tick(s(112.0)), offline("no frame for 10 s"));
    }

    #[test]
    fn a_camera_that_never_delivers_goes_offline_after_the_interval_from_the_start() {
        let mut h = CameraHealth::new(s(2.5), s(1.0));
        assert_eq!(h.tick(s(3.4)), None);
        assert_eq!(h.tick(s(3.5)), offline("no frame for 2.5 s"));
    }

    #[test]
    fn a_source_error_is_offline_at_once_with_its_reason() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        h.frame(s(1.0));
        let reason = "pipe `cam`: exited (exit status: 1); restarting in 500ms";
        assert_eq!(h.error(s(1.2), reason), offline(reason));
        assert_eq!(h.error(s(2.0), "pipe `cam`: exited again"), None);
        assert_eq!(h.tick(s(30.0)), None);
    }

    #[test]
    fn an_error_before_the_first_frame_is_offline_too() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        assert_eq!(h.error(s(0.1), "cannot start"), offline("cannot start"));
        assert_eq!(h.frame(s(0.5)), Some(CameraStatus::Online));
    }

    #[test]
    fn a_frame_captured_before_the_failure_does_not_bring_it_back() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        h.frame(s(1.0));
        assert_eq!(h.error(s(2.0), "exited"), offline("exited"));
        // Captured at 1.9 s, taken from the mailbox after the error.
        assert_eq!(h.frame(s(1.9)), None);
        assert_eq!(h.frame(s(2.0)), None);
        assert!(!h.is_online());
        assert_eq!(h.frame(s(2.1)), Some(CameraStatus::Online));
    }

    #[test]
    fn an_old_frame_does_not_move_the_timer_back() {
        let mut h = CameraHealth::new(s(10.0), s(0.0));
        h.frame(s(5.0));
        h.frame(s(4.0));
        assert_eq!(h.tick(s(14.5)), None);
        assert!(h.tick(s(15.0)).is_some());
    }
}

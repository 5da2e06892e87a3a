//! Rate-limited warnings: a camera that is unplugged, a pipe command that fails at once on
//! every restart, a stream of corrupt frames would otherwise write the same warning many times
//! a second into the journal.
//!
//! [`Repeats`] decides, per kind of warning (a caller-chosen key), whether an occurrence is
//! logged: the first one is, at once; the repeats that follow within [`Repeats::every`] are
//! only counted, and the next occurrence after that interval is logged as a summary
//! (`... (repeated 29 times in the last 60 s)`). A count still pending when the warnings stop
//! is reported by [`Repeats::due`], for a caller with a loop that runs anyway. A recovery does
//! not reset the count: a camera that flaps (fails, delivers a frame, fails again) is still
//! logged once a minute. Nothing here reads a clock: time comes in as a value.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The interval the daemon uses: a repeated warning is logged at most once a minute.
pub const EVERY: Duration = Duration::from_secs(60);

/// What to do with one occurrence of a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// Log it as it is (the first of its kind, or the first after a quiet interval).
    Log,
    /// Count it, log nothing.
    Quiet,
    /// Log it with the count of the occurrences since the last logged one, this one included,
    /// over `over`.
    Repeated {
        /// Occurrences since the last logged one, this one included.
        count: u64,
        /// Since the last logged one.
        over: Duration,
    },
}

impl Say {
    /// The text to log for `message`, if any: the message itself, or the message with its
    /// repeat count.
    pub fn text(self, message: impl std::fmt::Display) -> Option<String> {
        match self {
            Say::Log => Some(message.to_string()),
            Say::Quiet => None,
            Say::Repeated { count, over } => Some(format!(
                "{message} (repeated {count} times in the last {} s)",
                over.as_secs()
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When an occurrence was last logged.
    logged_at: Instant,
    /// Occurrences counted, not logged, since then.
    quiet: u64,
}

/// Per-key repeat counts for rate-limited warnings (see the module docs).
#[derive(Debug, Clone)]
pub struct Repeats<K> {
    every: Duration,
    seen: HashMap<K, Seen>,
}

impl<K: std::hash::Hash + Eq + Clone> Repeats<K> {
    /// Logs each kind of warning at most once per `every` (plus the first at once).
    pub fn new(every: Duration) -> Self {
        Repeats {
            every,
            seen: HashMap::new(),
        }
    }

    /// The interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// One occurrence of warning `key` at `now`: whether and how to log it.
    pub fn note(&mut self, key: &K, now: Instant) -> Say {
        let Some(seen) = self.seen.get_mut(key) else {
            self.seen.insert(
                key.clone(),
                Seen {
                    logged_at: now,
                    quiet: 0,
                },
            );
            return Say::Log;
        };
        let over = now.saturating_duration_since(seen.logged_at);
        if over < self.every {
            seen.quiet += 1;
            return Say::Quiet;
        }
        let count = seen.quiet + 1;
        *seen = Seen {
            logged_at: now,
            quiet: 0,
        };
        if count == 1 {
            Say::Log
        } else {
            Say::Repeated { count, over }
        }
    }

    /// Keys whose counted, unlogged occurrences are at least `every` old at `now`, with their
    /// counts and the time since their last logged occurrence; they start a new interval. For a
    /// loop that runs anyway, so a count is reported even when the warnings stop.
    pub fn due(&mut self, now: Instant) -> Vec<(K, u64, Duration)> {
        let mut out = Vec::new();
        for (key, seen) in &mut self.seen {
            let over = now.saturating_duration_since(seen.logged_at);
            if seen.quiet > 0 && over >= self.every {
                out.push((key.clone(), seen.quiet, over));
                *seen = Seen {
                    logged_at: now,
                    quiet: 0,
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_first_is_logged_the_repeats_counted_then_summed_up_once_a_minute() {
        let t0 = Instant::now();
        let mut r = Repeats::new(secs(60));
        assert_eq!(r.note(&"exit", t0), Say::Log);
        for i in 1..=28 {
            assert_eq!(r.note(&"exit", t0 + secs(2 * i)), Say::Quiet, "at {i}");
        }
        // The 30th occurrence, 60 s after the first: the 29 since it, this one included.
        assert_eq!(
            r.note(&"exit", t0 + secs(60)),
            Say::Repeated {
                count: 29,
                over: secs(60)
            }
        );
        assert_eq!(r.note(&"exit", t0 + secs(61)), Say::Quiet);
        assert_eq!(
            r.note(&"exit", t0 + secs(125)),
            Say::Repeated {
                count: 2,
                over: secs(65)
            }
        );
    }

    #[test]
    fn keys_are_counted_apart() {
        let t0 = Instant::now();
        let mut r = Repeats::new(secs(60));
        assert_eq!(r.note(&"timeout", t0), Say::Log);
        assert_eq!(r.note(&"corrupt", t0 + secs(1)), Say::Log);
        assert_eq!(r.note(&"timeout", t0 + secs(2)), Say::Quiet);
        assert_eq!(r.note(&"corrupt", t0 + secs(3)), Say::Quiet);
    }

    #[test]
    fn a_lone_repeat_after_a_quiet_interval_is_logged_plainly() {
        let t0 = Instant::now();
        let mut r = Repeats::new(secs(60));
        assert_eq!(r.note(&1, t0), Say::Log);
        assert_eq!(r.note(&1, t0 + secs(600)), Say::Log);
        assert_eq!(r.note(&1, t0 + secs(601)), Say::Quiet);
    }

    #[test]
    fn due_reports_counts_once_their_interval_is_over() {
        let t0 = Instant::now();
        let mut r = Repeats::new(secs(60));
        r.note(&"a", t0);
        r.note(&"a", t0 + secs(1));
        r.note(&"b", t0 + secs(5));
        assert!(r.due(t0 + secs(59)).is_empty());
        assert_eq!(r.due(t0 + secs(60)), vec![("a", 1, secs(60))]);
        assert!(r.due(t0 + secs(200)).is_empty(), "b had no repeats");
        // A new interval started at the report.
        assert_eq!(r.note(&"a", t0 + secs(70)), Say::Quiet);
    }

    #[test]
    fn text_names_the_count_and_the_interval() {
        assert_eq!(Say::Log.text("x").as_deref(), Some("x"));
        assert_eq!(Say::Quiet.text("x"), None);
        assert_eq!(
            Say::Repeated {
                count: 29,
                over: secs(60)
            }
            .text("pipe `cam`: exited")
            .as_deref(),
            Some("pipe `cam`: exited (repeated 29 times in the last 60 s)")
        );
    }
}

//! The pure part of a GPIO line: which events drive it ([`Follows`]) and which physical level
//! it takes after an event or at a time ([`LineLogic`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::config::{GpioLineConfig, LineMode};
use crate::event::{Event, EventKind};

/// Which events drive a line: those of `label`, of `camera` and of `zone` when set (`None`:
/// any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follows {
    /// The label.
    pub label: String,
    /// Only this camera's events, when set.
    pub camera: Option<String>,
    /// Only this zone's events (`all`: the whole frame), when set.
    pub zone: Option<String>,
}

impl Follows {
    /// `label` of every camera and zone.
    pub fn label(label: &str) -> Follows {
        Follows {
            label: label.to_owned(),
            camera: None,
            zone: None,
        }
    }

    /// What `[[gpio.lines]]` entry `line` follows.
    pub fn of(line: &GpioLineConfig) -> Follows {
        Follows {
            label: line.label.clone(),
            camera: line.camera.clone(),
            zone: line.zone.clone(),
        }
    }

    /// Whether `event` drives the line.
    pub fn matches(&self, event: &Event) -> bool {
        event.label == self.label
            && self.camera.as_ref().is_none_or(|c| *c == event.camera)
            && self.zone.as_ref().is_none_or(|z| *z == event.zone)
    }
}

impl std::fmt::Display for Follows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "label {:?}", self.label)?;
        match &self.camera {
            Some(c) => write!(f, " of camera {c:?}")?,
            None => write!(f, " of every camera")?,
        }
        match &self.zone {
            Some(z) => write!(f, " in zone {z:?}"),
            None => write!(f, " in every zone"),
        }
    }
}

/// The pure behaviour of one line: which physical level to drive after an event or at a time.
#[derive(Debug, Clone)]
pub struct LineLogic {
    mode: LineMode,
    active_low: bool,
    pulse: Duration,
    on: bool,
    pulse_until: Option<Instant>,
    /// Level mode: the (camera, zone) pairs whose episode is running.
    active: BTreeSet<(String, String)>,
}

impl LineLogic {
    /// A line in the idle (off) state.
    pub fn new(mode: LineMode, active_low: bool, pulse: Duration) -> LineLogic {
        LineLogic {
            mode,
            active_low,
            pulse,
            on: false,
            pulse_until: None,
            active: BTreeSet::new(),
        }
    }

    /// The physical level of the idle (off) state: high for active-low lines.
    pub fn idle_level(&self) -> bool {
        self.active_low
    }

    /// Whether the line is logically on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    fn level(&self, on: bool) -> bool {
        on != self.active_low
    }

    /// Applies an event of `camera`'s `zone` at time `now`; returns the physical level to
    /// drive when it changes.
    ///
    /// Level mode: on at a start, off at the end of the last (camera, zone) pair still
    /// active (an end of a pair that never started counts as the last). Pulse mode: on at
    /// start until `now + pulse` (a start during a pulse extends it), ends are ignored.
    pub fn on_event(
        &mut self,
        kind: EventKind,
        (camera, zone): (&str, &str),
        now: Instant,
    ) -> Option<bool> {
        match (self.mode, kind) {
            (LineMode::Level, EventKind::Start) | (LineMode::Pulse, EventKind::Start) => {
                if self.mode == LineMode::Pulse {
                    self.pulse_until = Some(now + self.pulse);
                } else {
                    self.active.insert((camera.to_owned(), zone.to_owned()));
                }
                if self.on {
                    None
                } else {
                    self.on = true;
                    Some(self.level(true))
                }
            }
            (LineMode::Level, EventKind::End) => {
                self.active.remove(&(camera.to_owned(), zone.to_owned()));
                if self.active.is_empty() {
                    self.turn_off()
                } else {
                    None
                }
            }
            (LineMode::Pulse, EventKind::End) => None,
        }
    }

    /// When the current pulse ends, if one is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.pulse_until
    }

    /// Ends a pulse whose deadline is `<= now`; returns the level to drive when it changes.
    pub fn on_tick(&mut self, now: Instant) -> Option<bool> {
        match self.pulse_until {
            Some(until) if until <= now => self.turn_off(),
            _ => None,
        }
    }

    /// Turns the line off whatever its state (shutdown); returns the level when it changes.
    pub fn turn_off(&mut self) -> Option<bool> {
        self.pulse_until = None;
        self.active.clear();
        if self.on {
            self.on = false;
            Some(self.level(false))
        } else {
            None
        }
    }
}

//! Debouncing per-frame matches into start/end events.
//!
//! CLIP scores flicker from frame to frame; a consumer wants one `start` when something appears
//! and one `end` when it is gone. A [`Trigger`] fires `start` after `enter_frames` consecutive
//! frames at or above the threshold, `end` after `exit_frames` consecutive frames below it
//! (hysteresis), and then refuses a new `start` until `cooldown` has passed since the `end`.
//!
//! The code is pure: time comes in as a [`Duration`] since any fixed origin (the daemon uses the
//! time since it started, taken from the frame's capture instant), nothing here reads a clock.
//!
//! Frames that arrive during the cooldown still count towards the `enter_frames` run, so an
//! object that stays in view starts again as soon as the cooldown is over, and a start is always
//! preceded by `enter_frames` consecutive active frames.

use std::time::{Duration, SystemTime};

use crate::event::{Event, EventKind};

/// The knobs of one label's trigger. No defaults here: the config's reader owns them
/// (`[trigger]`, `matcher.threshold`), and the daemon fills these from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerParams {
    /// A frame is active when its value (probability or score, see [`Metric`]) is `>=` this.
    pub threshold: f32,
    /// Consecutive active frames needed for a start (at least 1; 0 is treated as 1).
    pub enter_frames: u32,
    /// Consecutive inactive frames needed for an end (at least 1; 0 is treated as 1).
    pub exit_frames: u32,
    /// No new start until this long after an end.
    pub cooldown: Duration,
}

/// A state change of one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The label became active.
    Start,
    /// The label stopped being active.
    End,
}

impl From<Transition> for EventKind {
    fn from(t: Transition) -> EventKind {
        match t {
            Transition::Start => EventKind::Start,
            Transition::End => EventKind::End,
        }
    }
}

/// The hysteresis state machine of one label.
#[derive(Debug, Clone)]
pub struct Trigger {
    params: TriggerParams,
    active: bool,
    /// Length of the current run of frames that argue for a change of state.
    run: u32,
    /// No start before this time (set at each end).
    quiet_until: Option<Duration>,
}

impl Trigger {
    /// A trigger in the inactive state.
    pub fn new(params: TriggerParams) -> Trigger {
        Trigger {
            params,
            active: false,
            run: 0,
            quiet_until: None,
        }
    }

    /// The parameters this trigger runs with.
    pub fn params(&self) -> &TriggerParams {
        &self.params
    }

    /// Whether the label is active (between a start and its end).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether `value` counts as an active frame (`value >= threshold`; NaN never does).
    pub fn is_hit(&self, value: f32) -> bool {
        value >= self.params.threshold
    }

    /// Feeds one frame: `hit` says whether the frame was at or above the threshold, `now` is the
    /// frame's time since the (fixed) origin. Returns the transition this frame causes, if any.
    pub fn update(&mut self, hit: bool, now: Duration) -> Option<Transition> {
        if self.active {
            if hit {
                self.run = 0;
                return None;
            }
            self.run = self.run.saturating_add(1);
            if self.run >= self.params.exit_frames.max(1) {
                self.active = false;
                self.run = 0;
                self.quiet_until = Some(now.saturating_add(self.params.cooldown));
                return Some(Transition::End);
            }
            None
        } else {
            if !hit {
                self.run = 0;
                return None;
            }
            self.run = self.run.saturating_add(1);
            let quiet = self.quiet_until.is_some_and(|until| now < until);
            if self.run >= self.params.enter_frames.max(1) && !quiet {
                self.active = true;
                self.run = 0;
                return Some(Transition::Start);
            }
            None
        }
    }

    /// Ends an active trigger unconditionally (shutdown, end of a clip). Returns
    /// `Some(Transition::End)` when it was active.
    pub fn finish(&mut self, now: Duration) -> Option<Transition> {
        self.run = 0;
        if self.active {
            self.active = false;
            self.quiet_until = Some(now.saturating_add(self.params.cooldown));
            Some(Transition::End)
        } else {
            None
        }
    }
}

/// Which value of a [`LabelScore`] is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// The softmax probability (`prob`), the default.
    #[default]
    Prob,
    /// The raw cosine similarity (`score`).
    Score,
}

/// One label of a [`TriggerBank`].
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSpec {
    /// The label (`prompts[].label`).
    pub label: String,
    /// The prompt text put in events.
    pub prompt: String,
    /// The trigger knobs of this label.
    pub params: TriggerParams,
}

/// The matcher's verdict on one label for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelScore {
    /// Index of the label in the bank (the order of `[[prompts]]`).
    pub label: usize,
    /// Raw cosine similarity.
    pub score: f32,
    /// Softmax probability.
    pub prob: f32,
}

/// What the bank needs to know about the frame behind a batch of scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameStamp {
    /// The frame sequence number.
    pub seq: u64,
    /// When the frame was captured (wall clock), for the event timestamp.
    pub wall: SystemTime,
    /// Time since the fixed origin (monotonic), for the hysteresis and cooldown.
    pub now: Duration,
    /// Capture-to-decision latency, in milliseconds.
    pub latency_ms: f32,
}

struct Slot {
    spec: LabelSpec,
    trigger: Trigger,
    last_score: f32,
    last_prob: f32,
}

/// The triggers of all labels of one camera, turning per-frame scores into [`Event`]s.
pub struct TriggerBank {
    camera: String,
    /// The zone the events carry (`all` unless [`TriggerBank::with_zone`]).
    zone: String,
    metric: Metric,
    slots: Vec<Slot>,
    /// Per-label scratch for `update`, kept so the per-frame path does not allocate.
    seen: Vec<Option<LabelScore>>,
}

impl TriggerBank {
    /// One inactive trigger per label, in the given order (label index = position).
    pub fn new(camera: impl Into<String>, metric: Metric, labels: Vec<LabelSpec>) -> TriggerBank {
        TriggerBank {
            camera: camera.into(),
            zone: crate::frame::ALL_ZONE.to_owned(),
            metric,
            slots: labels
                .into_iter()
                .map(|spec| Slot {
                    trigger: Trigger::new(spec.params),
                    spec,
                    last_score: 0.0,
                    last_prob: 0.0,
                })
                .collect(),
            seen: Vec::new(),
        }
    }

    /// The same bank for the zone `zone` of its camera: its events carry that zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> TriggerBank {
        self.zone = zone.into();
        self
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the bank has no labels.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Which value the thresholds apply to.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The parameters of the label at `index`; `None` for an unknown index.
    pub fn params(&self, index: usize) -> Option<TriggerParams> {
        self.slots.get(index).map(|s| *s.trigger.params())
    }

    /// Whether the label at `index` is active; `false` for an unknown index.
    pub fn is_active(&self, index: usize) -> bool {
        self.slots.get(index).is_some_and(|s| s.trigger.is_active())
    }

    /// The labels that are active now.
    pub fn active_labels(&self) -> impl Iterator<Item = &str> {
        self.slots
            .iter()
            .filter(|s| s.trigger.is_active())
            .map(|s| s.spec.label.as_str())
    }

    /// Feeds the scores of one frame. Every label is updated once: a label missing from `scores`
    /// counts as an inactive frame (with score and probability 0); an index outside the bank is
    /// ignored; if a label appears twice the first entry wins. Returns the events this frame
    /// causes, in label order.
    pub fn update(&mut self, frame: FrameStamp, scores: &[LabelScore]) -> Vec<Event> {
        let seen = &mut self.seen;
        seen.clear();
        seen.resize(self.slots.len(), None);
        for s in scores {
            if let Some(slot) = seen.get_mut(s.label)
                && slot.is_none()
            {
                *slot = Some(*s);
            }
        }
        let mut events = Vec::new();
        for (slot, score) in self.slots.iter_mut().zip(self.seen.iter().copied()) {
            let (score, prob) = score.map_or((0.0, 0.0), |s| (s.score, s.prob));
            slot.last_score = score;
            slot.last_prob = prob;
            let value = match self.metric {
                Metric::Prob => prob,
                Metric::Score => score,
            };
            let hit = slot.trigger.is_hit(value);
            if let Some(t) = slot.trigger.update(hit, frame.now) {
                events.push(make_event(&self.camera, &self.zone, slot, t, &frame));
            }
        }
        events
    }

    /// Ends every active label (shutdown, end of a clip), with the last seen scores; `frame`
    /// stamps the events (usually the last frame).
    pub fn finish(&mut self, frame: FrameStamp) -> Vec<Event> {
        let mut events = Vec::new();
        for slot in &mut self.slots {
            if let Some(t) = slot.trigger.finish(frame.now) {
                events.push(make_event(&self.camera, &self.zone, slot, t, &frame));
            }
        }
        events
    }
}

fn make_event(camera: &str, zone: &str, slot: &Slot, t: Transition, frame: &FrameStamp) -> Event {
    Event {
        kind: t.into(),
        camera: camera.to_owned(),
        zone: zone.to_owned(),
        label: slot.spec.label.clone(),
        prompt: slot.spec.prompt.clone(),
        score: slot.last_score,
        prob: slot.last_prob,
        frame: frame.seq,
        ts: frame.wall,
        latency_ms: frame.latency_ms,
        runner_up: None,
        snapshot: None,
    }
}

#[cfg(test)]
mod tests;

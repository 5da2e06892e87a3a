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

/// The knobs of one label's trigger.
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

impl Default for TriggerParams {
    fn default() -> Self {
        TriggerParams {
            threshold: 0.5,
            enter_frames: 3,
            exit_frames: 5,
            cooldown: Duration::ZERO,
        }
    }
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

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the bank has no labels.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
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
                events.push(make_event(&self.camera, slot, t, &frame));
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
                events.push(make_event(&self.camera, slot, t, &frame));
            }
        }
        events
    }
}

fn make_event(camera: &str, slot: &Slot, t: Transition, frame: &FrameStamp) -> Event {
    Event {
        kind: t.into(),
        camera: camera.to_owned(),
        label: slot.spec.label.clone(),
        prompt: slot.spec.prompt.clone(),
        score: slot.last_score,
        prob: slot.last_prob,
        frame: frame.seq,
        ts: frame.wall,
        latency_ms: frame.latency_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(enter: u32, exit: u32, cooldown_s: u64) -> TriggerParams {
        TriggerParams {
            threshold: 0.5,
            enter_frames: enter,
            exit_frames: exit,
            cooldown: Duration::from_secs(cooldown_s),
        }
    }

    /// Feeds `hits` at one frame per second, returns (frame index, transition).
    fn run(p: TriggerParams, hits: &[bool]) -> Vec<(usize, Transition)> {
        let mut t = Trigger::new(p);
        hits.iter()
            .enumerate()
            .filter_map(|(i, &h)| t.update(h, Duration::from_secs(i as u64)).map(|x| (i, x)))
            .collect()
    }

    #[test]
    fn starts_after_enter_frames_and_ends_after_exit_frames() {
        let hits = [true, true, true, false, false, true, false, false, false];
        assert_eq!(
            run(params(3, 3, 0), &hits),
            vec![(2, Transition::Start), (8, Transition::End)]
        );
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let hits = [true, true, false, true, true, true];
        assert_eq!(run(params(3, 1, 0), &hits), vec![(5, Transition::Start)]);
    }

    #[test]
    fn one_frame_settings_follow_the_input() {
        let hits = [true, false, true];
        assert_eq!(
            run(params(1, 1, 0), &hits),
            vec![
                (0, Transition::Start),
                (1, Transition::End),
                (2, Transition::Start)
            ]
        );
    }

    #[test]
    fn zero_frame_settings_behave_like_one() {
        assert_eq!(run(params(0, 0, 0), &[true, false]).len(), 2);
    }

    #[test]
    fn cooldown_blocks_a_new_start_until_it_expires() {
        // End at t=1 with a 5 s cooldown: hits at t=2..=7 may not start before t=6.
        let hits = [true, false, true, true, true, true, true, true];
        assert_eq!(
            run(params(1, 1, 5), &hits),
            vec![
                (0, Transition::Start),
                (1, Transition::End),
                (6, Transition::Start)
            ]
        );
    }

    #[test]
    fn threshold_is_inclusive_and_nan_is_never_a_hit() {
        let t = Trigger::new(params(1, 1, 0));
        assert!(t.is_hit(0.5));
        assert!(!t.is_hit(0.4999));
        assert!(!t.is_hit(f32::NAN));
    }

    #[test]
    fn finish_ends_only_active_triggers() {
        let mut t = Trigger::new(params(1, 1, 0));
        assert_eq!(t.finish(Duration::ZERO), None);
        assert_eq!(t.update(true, Duration::ZERO), Some(Transition::Start));
        assert_eq!(t.finish(Duration::from_secs(1)), Some(Transition::End));
        assert!(!t.is_active());
        assert_eq!(t.finish(Duration::from_secs(2)), None);
    }

    fn stamp(seq: u64) -> FrameStamp {
        FrameStamp {
            seq,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(seq),
            now: Duration::from_secs(seq),
            latency_ms: 10.0,
        }
    }

    fn bank(metric: Metric) -> TriggerBank {
        TriggerBank::new(
            "cam0",
            metric,
            vec![
                LabelSpec {
                    label: "person".into(),
                    prompt: "a photo of a person".into(),
                    params: params(2, 1, 0),
                },
                LabelSpec {
                    label: "cat".into(),
                    prompt: "a photo of a cat".into(),
                    params: params(1, 1, 0),
                },
            ],
        )
    }

    #[test]
    fn bank_emits_events_with_the_causing_frame() {
        let mut b = bank(Metric::Prob);
        let s = |label, prob| LabelScore {
            label,
            score: prob / 2.0,
            prob,
        };
        assert!(b.update(stamp(0), &[s(0, 0.9), s(1, 0.1)]).is_empty());
        let ev = b.update(stamp(1), &[s(0, 0.8), s(1, 0.7)]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, EventKind::Start);
        assert_eq!(ev[0].label, "person");
        assert_eq!(ev[0].prompt, "a photo of a person");
        assert_eq!(ev[0].prob, 0.8);
        assert_eq!(ev[0].score, 0.4);
        assert_eq!(ev[0].frame, 1);
        assert_eq!(ev[0].camera, "cam0");
        assert_eq!(ev[0].ts, stamp(1).wall);
        assert_eq!(ev[1].label, "cat");
        assert!(b.is_active(0) && b.is_active(1));
        assert_eq!(b.active_labels().collect::<Vec<_>>(), vec!["person", "cat"]);

        // "cat" missing from the slice counts as inactive; unknown index 7 is ignored.
        let ev = b.update(stamp(2), &[s(0, 0.9), s(7, 1.0)]);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].kind, ev[0].label.as_str()), (EventKind::End, "cat"));
        assert_eq!(ev[0].prob, 0.0);

        let ev = b.finish(stamp(3));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].label.as_str()),
            (EventKind::End, "person")
        );
        assert_eq!(ev[0].prob, 0.9, "finish reports the last seen probability");
        assert!(b.finish(stamp(4)).is_empty());
    }

    #[test]
    fn bank_can_threshold_the_raw_score() {
        let mut b = bank(Metric::Score);
        let ev = b.update(
            stamp(0),
            &[LabelScore {
                label: 1,
                score: 0.6,
                prob: 0.1,
            }],
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].label, "cat");
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_input(
            hits in proptest::collection::vec(any::<bool>(), 0..300),
            enter in 1u32..6,
            exit in 1u32..6,
            cooldown in 0u64..10,
        ) {
            let p = params(enter, exit, cooldown);
            let out = run(p, &hits);
            // Starts and ends alternate, beginning with a start.
            for (k, (_, t)) in out.iter().enumerate() {
                let expected = if k % 2 == 0 { Transition::Start } else { Transition::End };
                prop_assert_eq!(*t, expected);
            }
            for (k, &(i, t)) in out.iter().enumerate() {
                match t {
                    Transition::Start => {
                        // Preceded (inclusively) by `enter` consecutive hits.
                        prop_assert!(i + 1 >= enter as usize);
                        prop_assert!(hits[i + 1 - enter as usize..=i].iter().all(|&h| h));
                        // Not within the cooldown after the previous end (1 frame = 1 s).
                        if k > 0 {
                            let (end_at, _) = out[k - 1];
                            prop_assert!((i - end_at) as u64 >= cooldown);
                        }
                    }
                    Transition::End => {
                        prop_assert!(i + 1 >= exit as usize);
                        prop_assert!(hits[i + 1 - exit as usize..=i].iter().all(|&h| !h));
                    }
                }
            }
        }

        #[test]
        fn constant_active_input_starts_exactly_once(
            n in 1usize..200,
            enter in 1u32..6,
            exit in 1u32..6,
            cooldown in 0u64..10,
        ) {
            let hits = vec![true; n];
            let out = run(params(enter, exit, cooldown), &hits);
            if n >= enter as usize {
                prop_assert_eq!(out, vec![(enter as usize - 1, Transition::Start)]);
            } else {
                prop_assert!(out.is_empty());
            }
        }

        #[test]
        fn constant_inactive_input_never_fires(n in 0usize..200, enter in 1u32..6) {
            prop_assert!(run(params(enter, 1, 0), &vec![false; n]).is_empty());
        }
    }
}

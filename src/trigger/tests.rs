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

use super::*;
use proptest::prelude::*;
use std::cell::Cell;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A selector with frames named by their number, events by a string.
fn selector(window_ms: u64) -> Selector<&'static str, u64> {
    Selector::new(ms(window_ms))
}

/// Offers frame `n` taken at `t` ms with one score for every label; returns the windows it
/// improved.
fn offer(s: &mut Selector<&'static str, u64>, n: u64, t: u64, score: f32) -> usize {
    s.offer(ms(t), |_| score, || n)
}

#[test]
fn the_best_frame_of_the_window_wins() {
    let mut s = selector(1000);
    assert!(s.open(0, "e1", ms(0)).is_none());
    offer(&mut s, 1, 0, 0.6);
    offer(&mut s, 2, 300, 0.9);
    offer(&mut s, 3, 600, 0.7);
    assert!(
        s.expire(ms(1000)).is_empty(),
        "the window ends at 1000 ms, included"
    );
    offer(&mut s, 4, 1000, 0.8);
    let done = s.expire(ms(1001));
    assert_eq!(
        done,
        vec![Chosen {
            label: 0,
            key: "e1",
            frame: 2,
            score: 0.9,
            at: ms(300)
        }]
    );
    assert!(s.is_empty());
}

#[test]
fn frames_past_the_window_are_not_offered_even_before_it_expires() {
    let mut s = selector(500);
    s.open(0, "e", ms(0));
    offer(&mut s, 1, 0, 0.5);
    assert_eq!(offer(&mut s, 2, 501, 0.99), 0);
    assert_eq!(s.close(0).unwrap().frame, 1);
}

#[test]
fn an_early_end_closes_the_window_with_its_best_frame_so_far() {
    let mut s = selector(1000);
    s.open(3, "e", ms(0));
    offer(&mut s, 10, 0, 0.5);
    offer(&mut s, 11, 100, 0.8);
    let c = s.close(3).unwrap();
    assert_eq!((c.label, c.key, c.frame, c.score), (3, "e", 11, 0.8));
    assert!(s.close(3).is_none(), "closed once");
    assert!(s.expire(ms(5000)).is_empty());
}

#[test]
fn a_zero_window_takes_the_start_frame() {
    let mut s = selector(0);
    s.open(0, "e", ms(40));
    offer(&mut s, 1, 40, 0.1);
    assert_eq!(offer(&mut s, 2, 80, 0.9), 0);
    assert_eq!(s.expire(ms(80))[0].frame, 1);
}

#[test]
fn the_frame_is_made_only_when_it_improves_a_window_and_once() {
    let mut s: Selector<&str, u64> = Selector::new(ms(1000));
    let made = Cell::new(0);
    let make = |n| {
        made.set(made.get() + 1);
        n
    };
    // No window: nothing is made.
    assert_eq!(s.offer(ms(0), |_| 1.0, || make(0)), 0);
    assert_eq!(made.get(), 0);
    s.open(0, "a", ms(0));
    s.open(1, "b", ms(0));
    // Improves both windows: made once.
    assert_eq!(s.offer(ms(0), |_| 0.5, || make(1)), 2);
    assert_eq!(made.get(), 1);
    // Improves neither: not made.
    assert_eq!(s.offer(ms(10), |_| 0.4, || make(2)), 0);
    assert_eq!(made.get(), 1);
    // Improves one: made once.
    assert_eq!(
        s.offer(ms(20), |l| if l == 1 { 0.7 } else { 0.1 }, || make(3)),
        1
    );
    assert_eq!(made.get(), 2);
    let done = s.close_all();
    assert_eq!(
        done.iter().map(|c| (c.key, c.frame)).collect::<Vec<_>>(),
        vec![("a", 1), ("b", 3)]
    );
}

#[test]
fn ties_keep_the_earlier_frame_and_nan_never_wins() {
    let mut s = selector(1000);
    s.open(0, "e", ms(0));
    offer(&mut s, 1, 0, f32::NAN);
    assert_eq!(offer(&mut s, 2, 10, 0.3), 1, "a number beats NaN");
    assert_eq!(
        offer(&mut s, 3, 20, 0.3),
        0,
        "a tie keeps the earlier frame"
    );
    assert_eq!(offer(&mut s, 4, 30, f32::NAN), 0, "NaN never wins");
    assert_eq!(s.close(0).unwrap().frame, 2);
    // A first frame is kept whatever its score.
    s.open(0, "f", ms(100));
    assert_eq!(offer(&mut s, 5, 100, f32::NAN), 1);
    assert_eq!(s.close(0).unwrap().frame, 5);
    assert!(beats(-1.0, None));
    assert!(beats(f32::NEG_INFINITY, Some(f32::NAN)));
    assert!(!beats(f32::INFINITY, Some(f32::INFINITY)));
}

#[test]
fn labels_have_windows_of_their_own() {
    let mut s: Selector<&str, u64> = Selector::new(ms(1000));
    s.open(0, "a", ms(0));
    s.offer(ms(0), |l| [0.9, 0.1][l], || 1);
    s.open(1, "b", ms(500));
    s.offer(ms(500), |l| [0.5, 0.6][l], || 2);
    s.offer(ms(1200), |l| [0.99, 0.7][l], || 3);
    assert!(s.is_open(0) && s.is_open(1));
    let first = s.expire(ms(1200));
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].key, first[0].frame), ("a", 1));
    let second = s.expire(ms(1501));
    assert_eq!((second[0].key, second[0].frame), ("b", 3));
}

#[test]
fn reopening_a_label_closes_its_previous_window() {
    let mut s = selector(1000);
    s.open(0, "old", ms(0));
    offer(&mut s, 1, 0, 0.5);
    let previous = s.open(0, "new", ms(100)).unwrap();
    assert_eq!((previous.key, previous.frame), ("old", 1));
    assert_eq!(s.len(), 1);
    offer(&mut s, 2, 100, 0.1);
    assert_eq!(s.close(0).unwrap().key, "new");
}

#[test]
fn windows_without_a_frame_close_without_a_result() {
    let mut s = selector(100);
    s.open(0, "a", ms(0));
    s.open(1, "b", ms(0));
    assert!(s.close(0).is_none());
    assert!(s.expire(ms(200)).is_empty());
    assert!(s.is_empty());
    s.open(2, "c", ms(0));
    assert!(s.close_all().is_empty());
    assert_eq!(s.window(), ms(100));
}

/// One frame of a generated run: the time since the previous frame, each label's score, and
/// which labels end and start on it.
#[derive(Debug, Clone)]
struct Step {
    dt_ms: u64,
    scores: [f32; LABELS],
    ends: [bool; LABELS],
    starts: [bool; LABELS],
}

const LABELS: usize = 3;

fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        10 => (0u8..=20).prop_map(|v| f32::from(v) / 20.0),
        1 => Just(f32::NAN),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u64..400,
        [score(), score(), score()],
        proptest::array::uniform3(proptest::bool::weighted(0.15)),
        proptest::array::uniform3(proptest::bool::weighted(0.15)),
    )
        .prop_map(|(dt_ms, scores, ends, starts)| Step {
            dt_ms,
            scores,
            ends,
            starts,
        })
}

/// What [`drive`] returns: the snapshots chosen, each frame's time in ms, how many frames were
/// made.
type Driven = (Vec<Chosen<(usize, usize), usize>>, Vec<u64>, usize);

/// The daemon's order of calls for one frame: expire, close the labels that ended, open the
/// ones that started, offer the frame. Frames are numbered by their index; an event's key is
/// (label, index of its start frame).
fn drive(window_ms: u64, steps: &[Step]) -> Driven {
    let mut s: Selector<(usize, usize), usize> = Selector::new(ms(window_ms));
    let mut out = Vec::new();
    let mut times = Vec::new();
    let mut made = 0;
    let mut t = 0;
    for (i, st) in steps.iter().enumerate() {
        t += st.dt_ms;
        times.push(t);
        out.extend(s.expire(ms(t)));
        for l in 0..LABELS {
            if st.ends[l] {
                out.extend(s.close(l));
            }
        }
        for l in 0..LABELS {
            if st.starts[l] {
                out.extend(s.open(l, (l, i), ms(t)));
            }
        }
        let made_before = made;
        let improved = s.offer(
            ms(t),
            |l| st.scores[l],
            || {
                made += 1;
                i
            },
        );
        assert_eq!(made - made_before, usize::from(improved > 0));
    }
    out.extend(s.close_all());
    (out, times, made)
}

proptest! {
    /// Every start yields exactly one snapshot, of the best frame (the earliest of equals) among
    /// the frames from its start until the first frame past its window, its label's end or
    /// its label's next start.
    #[test]
    fn each_start_gets_the_best_frame_of_its_window(
        window_ms in 0u64..1500,
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let (chosen, times, _) = drive(window_ms, &steps);
        let mut expected = Vec::new();
        for (i, st) in steps.iter().enumerate() {
            for l in 0..LABELS {
                if !st.starts[l] {
                    continue;
                }
                let until = times[i] + window_ms;
                let mut best: Option<(usize, f32)> = None;
                for (j, sj) in steps.iter().enumerate().skip(i) {
                    let stop = times[j] > until
                        || (j > i && (sj.ends[l] || sj.starts[l]));
                    if stop {
                        break;
                    }
                    if beats(sj.scores[l], best.map(|b| b.1)) {
                        best = Some((j, sj.scores[l]));
                    }
                }
                let (frame, _) = best.expect("the start frame is always a candidate");
                expected.push(((l, i), frame));
            }
        }
        let mut got: Vec<((usize, usize), usize)> =
            chosen.iter().map(|c| (c.key, c.frame)).collect();
        got.sort();
        expected.sort();
        prop_assert_eq!(got, expected);
        for c in &chosen {
            let start = times[c.key.1];
            prop_assert_eq!(c.label, c.key.0);
            prop_assert_eq!(c.at, ms(times[c.frame]));
            prop_assert!(times[c.frame] >= start && times[c.frame] <= start + window_ms);
            let s = c.score;
            let expect = steps[c.frame].scores[c.label];
            prop_assert!(s == expect || (s.is_nan() && expect.is_nan()));
        }
    }

    /// A frame is made at most once per offer (`drive` checks each), so never more often than
    /// frames were offered; every chosen frame was made; every start yields one snapshot.
    #[test]
    fn frames_are_made_at_most_once_each(
        window_ms in 0u64..1500,
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let (chosen, _, made) = drive(window_ms, &steps);
        prop_assert!(made <= steps.len());
        let distinct: std::collections::BTreeSet<usize> = chosen.iter().map(|c| c.frame).collect();
        prop_assert!(distinct.len() <= made);
        let starts: usize = steps.iter().map(|s| s.starts.iter().filter(|&&b| b).count()).sum();
        prop_assert_eq!(chosen.len(), starts);
    }
}

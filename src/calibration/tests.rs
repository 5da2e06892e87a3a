use proptest::prelude::*;

use super::*;

const DAY: Target = Target {
    false_alarms_per_day: 1.0,
    fps: 15.0,
};

/// A deterministic pseudo-random stream in [0, 1) (xorshift), so the tests need no seed file.
fn uniform(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// Exponentially distributed values of mean `mean` above `base`.
fn exponential(seed: u64, n: usize, base: f64, mean: f64) -> Vec<f64> {
    uniform(seed, n)
        .into_iter()
        .map(|u| base - mean * (1.0 - u).ln())
        .collect()
}

#[test]
fn quantiles_interpolate_between_order_statistics() {
    let v = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(quantile(&v, 0.0), Some(1.0));
    assert_eq!(quantile(&v, 1.0), Some(5.0));
    assert_eq!(quantile(&v, 0.5), Some(3.0));
    assert_eq!(quantile(&v, 0.125), Some(1.5));
    assert_eq!(quantile(&v, 2.0), Some(5.0), "clamped");
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(quantile(&[7.0], 0.3), Some(7.0));
}

#[test]
fn window_minimums_follow_the_trigger() {
    let v = [0.1, 0.9, 0.8, 0.2, 0.7];
    assert_eq!(window_minimums(&v, 1), v.to_vec());
    assert_eq!(window_minimums(&v, 0), v.to_vec(), "0 frames count as 1");
    assert_eq!(window_minimums(&v, 2), vec![0.1, 0.8, 0.2, 0.2]);
    assert_eq!(window_minimums(&v, 3), vec![0.1, 0.2, 0.2]);
    assert!(window_minimums(&v, 6).is_empty());
}

#[test]
fn the_probability_scale_is_the_logit_and_back() {
    for p in [1e-6, 0.01, 0.3, 0.5, 0.9, 0.999] {
        let z = Scale::Prob.to_fit(p);
        assert!((Scale::Prob.from_fit(z) - p).abs() < 1e-12, "{p}");
    }
    assert_eq!(Scale::Prob.to_fit(0.5), 0.0);
    assert!(Scale::Prob.to_fit(0.0).is_finite(), "0 is clamped");
    assert!(Scale::Prob.to_fit(1.0).is_finite(), "1 is clamped");
    assert_eq!(Scale::Cosine.to_fit(0.25), 0.25);
    assert_eq!(Scale::Cosine.from_fit(1.5), 1.0, "clamped to the range");
}

#[test]
fn the_target_is_a_probability_per_window() {
    assert!((DAY.per_window() - 1.0 / 1_296_000.0).abs() < 1e-18);
    let ten = Target {
        false_alarms_per_day: 10.0,
        fps: 5.0,
    };
    assert!((ten.per_window() - 10.0 / 432_000.0).abs() < 1e-15);
}

#[test]
fn spreads_skip_non_finite_scores() {
    let s = Spread::of(&[3.0, f64::NAN, 1.0, 2.0, f64::INFINITY]).unwrap();
    assert_eq!((s.n, s.min, s.p50, s.max), (3, 1.0, 2.0, 3.0));
    assert_eq!(Spread::of(&[f64::NAN]), None);
    assert_eq!(Spread::of(&[]), None);
}

#[test]
fn an_exponential_tail_recovers_its_scale_and_quantiles() {
    // 100,000 draws of an exponential of mean 0.02 above 0.1: the fitted tail's quantile at a
    // probability far below 1/n is the true one, u + mean * ln(rate / p), to a few percent.
    let v = sorted_finite(&exponential(7, 100_000, 0.1, 0.02));
    let tail = Tail::fit(&v, 1000).unwrap();
    assert!((tail.scale - 0.02).abs() < 0.002, "{tail:?}");
    let p: f64 = 1e-7;
    let truth = 0.1 + 0.02 * (1.0 / p).ln();
    assert!(
        (tail.quantile(p) - truth).abs() < 0.03 * truth,
        "{} vs {truth}",
        tail.quantile(p)
    );
    // Exceedance and quantile are inverses above u.
    let z = tail.quantile(1e-5);
    assert!((tail.exceedance(z) - 1e-5).abs() < 1e-9);
    assert_eq!(
        tail.exceedance(tail.u - 1.0),
        tail.rate,
        "capped at the tail's rate"
    );
}

#[test]
fn a_tail_needs_points_below_it() {
    assert_eq!(Tail::fit(&[1.0, 2.0], 2), None);
    assert_eq!(Tail::fit(&[1.0, 2.0], 0), None);
    let t = Tail::fit(&[1.0, 2.0, 4.0], 1).unwrap();
    assert_eq!((t.u, t.scale, t.points), (2.0, 2.0, 1));
    assert!((t.rate - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn a_flat_tail_is_its_maximum() {
    let t = Tail::fit(&[0.5; 50], 10).unwrap();
    assert_eq!(t.scale, 0.0);
    assert_eq!(t.quantile(1e-9), 0.5);
    assert_eq!(t.exceedance(0.6), 0.0);
}

#[test]
fn tail_sizes_are_a_tenth_between_10_and_100() {
    assert_eq!(tail_points(20), 10);
    assert_eq!(tail_points(500), 50);
    assert_eq!(tail_points(100_000), 100);
    assert_eq!(tail_points(5), 4, "never all the points");
}

#[test]
fn short_footage_is_extrapolated_and_long_footage_is_read() {
    // 10 minutes of cosines: extrapolated above the largest window.
    let quiet = exponential(3, 9000, 0.2, 0.01);
    let b = QuietBound::estimate(Scale::Cosine, &quiet, 1, &DAY).unwrap();
    assert!(matches!(b.estimate, Estimate::Tail(_)), "{:?}", b.estimate);
    let max = quiet.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        b.value > max,
        "a one-a-day bound lies beyond ten minutes' maximum"
    );
    assert_eq!(b.windows(), 9000);
    // A generous target observed in the data: the empirical quantile.
    let often = Target {
        false_alarms_per_day: 20_000.0,
        fps: 15.0,
    };
    let b = QuietBound::estimate(Scale::Cosine, &quiet, 1, &often).unwrap();
    assert_eq!(b.estimate, Estimate::Empirical);
    let sorted = sorted_finite(&quiet);
    assert_eq!(Some(b.value), quantile(&sorted, 1.0 - often.per_window()));
}

#[test]
fn enter_frames_lower_the_bound_of_flickering_footage() {
    // Quiet scores that spike for one frame at a time: with enter_frames = 3 a spike never
    // makes a start, so the bound is that of the floor, not of the spikes.
    let mut quiet = exponential(11, 3000, 0.2, 0.005);
    for i in (0..quiet.len()).step_by(50) {
        quiet[i] = 0.6;
    }
    let one = QuietBound::estimate(Scale::Cosine, &quiet, 1, &DAY).unwrap();
    let three = QuietBound::estimate(Scale::Cosine, &quiet, 3, &DAY).unwrap();
    assert!(one.value >= 0.6, "{}", one.value);
    assert!(three.value < 0.4, "{}", three.value);
    assert_eq!(three.windows(), 2998);
}

#[test]
fn too_few_windows_are_refused() {
    let quiet = vec![0.1; MIN_WINDOWS + 1];
    assert!(QuietBound::estimate(Scale::Cosine, &quiet, 2, &DAY).is_some());
    assert!(QuietBound::estimate(Scale::Cosine, &quiet, 3, &DAY).is_none());
    let p = propose(Scale::Cosine, &quiet, &[0.9], 3, &DAY);
    assert_eq!(p.outcome, Err(Refusal::TooFewQuiet { windows: 19 }));
    assert!(p.outcome.unwrap_err().to_string().contains("19 windows"));
    let p = propose(Scale::Cosine, &[], &[], 3, &DAY);
    assert_eq!(p.outcome, Err(Refusal::TooFewQuiet { windows: 0 }));
    assert_eq!(p.quiet, None);
}

#[test]
fn without_positives_the_threshold_is_the_bound_rounded_up() {
    let quiet = exponential(5, 2000, 0.2, 0.01);
    let p = propose(Scale::Cosine, &quiet, &[], 1, &DAY);
    let t = p.outcome.unwrap();
    let b = p.bound.as_ref().unwrap().value;
    assert!(t >= b && t < b + 1e-4, "{t} vs {b}");
    assert_eq!(t, (t * 1e4).round() / 1e4, "four decimals");
    assert_eq!(p.margin(), None);
    let fa = p.false_alarms_per_day(Scale::Cosine, &DAY, t).unwrap();
    assert!(fa <= 1.0 + 1e-9, "{fa} a day at the proposed threshold");
}

#[test]
fn with_positives_the_threshold_lies_halfway_on_the_fitted_scale() {
    let quiet = exponential(5, 2000, 0.2, 0.01);
    let positives: Vec<f64> = uniform(9, 40).iter().map(|u| 0.6 + 0.1 * u).collect();
    let p = propose(Scale::Cosine, &quiet, &positives, 1, &DAY);
    let t = p.outcome.unwrap();
    let b = p.bound.as_ref().unwrap().value;
    let p5 = p.positives.unwrap().p5;
    assert!(b < t && t < p5);
    assert!(
        (t - (b + p5) / 2.0).abs() < 0.01,
        "{t} near the middle of {b} and {p5}"
    );
    assert!((p.margin().unwrap() - (p5 - b)).abs() < 1e-12);
    // Probabilities: halfway in logit, so a bound of 1e-4 and positives at 0.9999 give 0.5.
    let quiet: Vec<f64> = exponential(2, 2000, -12.0, 0.2)
        .into_iter()
        .map(|z| Scale::Prob.from_fit(z))
        .collect();
    let bound = QuietBound::estimate(Scale::Prob, &quiet, 1, &DAY).unwrap();
    let mirror = Scale::Prob.from_fit(-bound.z);
    let p = propose(Scale::Prob, &quiet, &[mirror; 10], 1, &DAY);
    assert_eq!(p.outcome, Ok(0.5));
}

#[test]
fn overlapping_scores_are_refused_and_named() {
    let quiet = exponential(5, 2000, 0.2, 0.05);
    let positives = vec![0.3, 0.35, 0.4, 0.8, 0.9];
    let p = propose(Scale::Cosine, &quiet, &positives, 1, &DAY);
    let Err(r @ Refusal::Overlap { bound, p5 }) = p.outcome else {
        panic!("{:?}", p.outcome);
    };
    assert!(bound >= p5);
    assert!(r.to_string().contains("overlap"), "{r}");
    assert!(p.margin().unwrap() <= 0.0);
}

#[test]
fn a_saturated_bound_is_refused() {
    // Quiet probabilities already at 1: nothing to threshold.
    let p = propose(Scale::Prob, &[1.0; 100], &[], 1, &DAY);
    assert!(
        matches!(p.outcome, Err(Refusal::Saturated { .. })),
        "{:?}",
        p.outcome
    );
}

#[test]
fn the_estimated_rate_matches_the_target_at_the_bound() {
    let quiet = exponential(21, 5000, 0.1, 0.02);
    let b = QuietBound::estimate(Scale::Cosine, &quiet, 1, &DAY).unwrap();
    let rate = b.exceedance(b.z) * DAY.fps * 86_400.0;
    assert!((rate - 1.0).abs() < 1e-6, "{rate}");
    // Below the tail, the empirical fraction.
    assert_eq!(b.exceedance(f64::NEG_INFINITY), 1.0);
}

proptest! {
    #[test]
    fn quantiles_are_monotone_and_within_the_data(
        mut v in proptest::collection::vec(-1.0f64..1.0, 1..200),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
    ) {
        v.sort_by(f64::total_cmp);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let (ql, qh) = (quantile(&v, lo).unwrap(), quantile(&v, hi).unwrap());
        prop_assert!(ql <= qh);
        prop_assert!(v[0] <= ql && qh <= v[v.len() - 1]);
    }

    #[test]
    fn window_minimums_bound_their_windows(
        v in proptest::collection::vec(-1.0f64..1.0, 0..100),
        k in 1usize..8,
    ) {
        let m = window_minimums(&v, k);
        prop_assert_eq!(m.len(), v.len().saturating_sub(k - 1));
        for (i, w) in m.iter().enumerate() {
            prop_assert!(v[i..i + k].iter().all(|x| x >= w));
            prop_assert!(v[i..i + k].contains(w));
        }
    }

    #[test]
    fn a_proposal_is_between_the_bound_and_the_positives_or_refused(
        quiet in proptest::collection::vec(-0.2f64..0.5, 0..400),
        positives in proptest::collection::vec(-0.2f64..1.0, 0..30),
        enter in 1u32..6,
        per_day in 0.01f64..1000.0,
        cosine in any::<bool>(),
    ) {
        let scale = if cosine { Scale::Cosine } else { Scale::Prob };
        let quiet: Vec<f64> = quiet.iter().map(|x| if cosine { *x } else { x.abs() * 2.0 - 0.01 }).collect();
        let target = Target { false_alarms_per_day: per_day, fps: 15.0 };
        let p = propose(scale, &quiet, &positives, enter, &target);
        match (p.outcome, &p.bound, p.positives) {
            (Ok(t), Some(b), Some(pos)) => {
                prop_assert!(b.value < t && t < pos.p5, "{} < {t} < {}", b.value, pos.p5);
            }
            (Ok(t), Some(b), None) => {
                prop_assert!(t >= b.value && t <= 1.0);
            }
            (Ok(_), None, _) => prop_assert!(false, "a threshold without a bound"),
            (Err(Refusal::Overlap { bound, p5 }), _, _) => prop_assert!(bound >= p5),
            (Err(Refusal::TooFewQuiet { windows }), None, _) => prop_assert!(windows < MIN_WINDOWS),
            (Err(Refusal::Saturated { bound }), _, _) => prop_assert!(bound >= 1.0 - 1e-6),
            (Err(r), b, _) => prop_assert!(false, "{r:?} with bound {b:?}"),
        }
    }

    #[test]
    fn fewer_false_alarms_never_lower_the_bound(
        quiet in proptest::collection::vec(0.0f64..0.5, 20..300),
        r in 0.01f64..100.0,
        factor in 1.0f64..100.0,
    ) {
        let loose = Target { false_alarms_per_day: r * factor, fps: 15.0 };
        let strict = Target { false_alarms_per_day: r, fps: 15.0 };
        let a = QuietBound::estimate(Scale::Cosine, &quiet, 1, &loose).unwrap();
        let b = QuietBound::estimate(Scale::Cosine, &quiet, 1, &strict).unwrap();
        prop_assert!(b.z >= a.z - 1e-12, "{} < {}", b.z, a.z);
    }

    #[test]
    fn more_enter_frames_never_raise_the_largest_window(
        quiet in proptest::collection::vec(0.0f64..0.5, 40..300),
        k in 1u32..5,
    ) {
        let a = QuietBound::estimate(Scale::Cosine, &quiet, k, &DAY).unwrap();
        let b = QuietBound::estimate(Scale::Cosine, &quiet, k + 1, &DAY).unwrap();
        // Window minimums only fall as windows grow; the bound is an order statistic plus a
        // tail of them, which can move either way by the fit; the largest window can only fall.
        prop_assert!(b.windows() == a.windows() - 1);
        let max = |q: &QuietBound| q.windows.last().copied().unwrap();
        prop_assert!(max(&b) <= max(&a));
    }
}

//! Per-label thresholds from the scores of quiet footage, aimed at a false-alarm rate, and
//! checked against positive examples: the pure arithmetic behind `edgeclip calibrate`.
//!
//! Nothing here reads a file, a clock or a model: scores come in as slices, the false-alarm
//! target and the camera's frame rate as values.
//!
//! # The method
//!
//! 1. **What a false alarm is.** A trigger starts when `enter_frames` (k) consecutive frames
//!    are at or above its threshold. So the quiet footage's series of scores becomes the series
//!    of its k-frame *window minimums*, one per window position: a start can only happen at a
//!    window whose minimum is at or above the threshold. Consecutive frames of a fixed camera are
//!    strongly correlated, so no independence is assumed: the windows are taken from the
//!    footage as it was recorded, and their correlation is whatever it was.
//! 2. **The rate as a quantile.** At `fps` frames per second a day has `fps * 86400` window
//!    positions; `r` false alarms a day allow each window a probability `q = r / (fps * 86400)`
//!    of reaching the threshold. The *quiet bound* is the `1 - q` quantile of the window
//!    minimums: at or above it, at most `r` starts a day are expected (an upper bound: a start
//!    needs at least one such window, and a run of them starts only once).
//! 3. **Estimating it.** With `n` windows, when `n * q >= m` (`m` the tail size below) the
//!    empirical quantile is used. Otherwise (the usual case: ten minutes at 15 fps are 9,000
//!    windows, a day is 1.3 million) the upper tail is extrapolated: the `m` largest window
//!    minimums (`m = n / 10`, between 10 and 100) are taken as exceedances over `u`, the next
//!    largest, and fitted with an exponential tail (a generalized Pareto tail of shape 0, its
//!    maximum-likelihood scale `s` the mean excess), so `P(X > u + y) = (m / n) * exp(-y / s)`
//!    and the bound is `u + s * ln(m / (n * q))`. The fit is on the scale where scores are
//!    closest to Gaussian: the cosine as it is, the softmax probability as its logit
//!    `ln(p / (1 - p))` (a probability is a logistic function of cosine differences). For a
//!    Gaussian-like tail an exponential one decays more slowly, so the bound errs high (fewer
//!    false alarms than asked for); for a heavier tail it would err low, which is why the report
//!    says when it extrapolates, and from how many frames.
//! 4. **Placing the threshold.** Without positive examples the threshold is the quiet bound
//!    (rounded up). With them, it goes halfway, on the fitted scale, between the quiet bound and
//!    the positives' 5th percentile: the quiet side keeps its false-alarm target with room to
//!    spare, and at least 95% of the examples stay above it. Where the quiet bound reaches the
//!    positives' 5th percentile the two overlap and no threshold is proposed: no threshold meets
//!    the target while keeping the examples. Fewer than [`MIN_WINDOWS`] windows are refused too.

use std::fmt;

/// The fewest quiet windows a proposal is made from.
pub const MIN_WINDOWS: usize = 20;

/// Seconds in a day.
const DAY_S: f64 = 86_400.0;

/// The percentile of the positives the threshold must stay below.
pub const POSITIVE_PERCENTILE: f64 = 0.05;

/// The smallest and largest probability the logit is taken of (f32 resolution near 1).
const P_MIN: f64 = 1e-12;
const P_MAX: f64 = 1.0 - 1e-7;

/// The scale a trigger's metric lives on, and the one its tail is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// A softmax probability in [0, 1], fitted as its logit.
    Prob,
    /// A cosine similarity in [-1, 1], fitted as it is.
    Cosine,
}

impl Scale {
    /// The metric's value on the fitting scale.
    pub fn to_fit(self, x: f64) -> f64 {
        match self {
            Scale::Prob => {
                let p = x.clamp(P_MIN, P_MAX);
                (p / (1.0 - p)).ln()
            }
            Scale::Cosine => x,
        }
    }

    /// Back from the fitting scale, clamped to the metric's range.
    pub fn from_fit(self, z: f64) -> f64 {
        match self {
            Scale::Prob => 1.0 / (1.0 + (-z).exp()),
            Scale::Cosine => z.clamp(-1.0, 1.0),
        }
    }

    /// The largest value a threshold can take.
    pub fn max(self) -> f64 {
        1.0
    }
}

/// What the thresholds aim at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// False alarms (starts on quiet footage) allowed per day.
    pub false_alarms_per_day: f64,
    /// The camera's frames per second.
    pub fps: f64,
}

impl Target {
    /// The probability each window may reach the threshold: `r / (fps * 86400)`.
    pub fn per_window(&self) -> f64 {
        self.false_alarms_per_day / (self.fps * DAY_S)
    }
}

/// The `q` quantile of ascending `sorted` values, linearly interpolated between order
/// statistics (Hyndman and Fan's type 7, numpy's default); `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = q.clamp(0.0, 1.0) * last as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// The minimum of every `k` consecutive values (k = 0 is 1); empty when there are fewer than
/// `k` values.
pub fn window_minimums(values: &[f64], k: usize) -> Vec<f64> {
    values
        .windows(k.max(1))
        .map(|w| w.iter().copied().fold(f64::INFINITY, f64::min))
        .collect()
}

/// Ascending finite values.
fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Order statistics of some scores, on the metric's scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// How many scores.
    pub n: usize,
    /// The smallest.
    pub min: f64,
    /// The 5th percentile.
    pub p5: f64,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (non-finite ones left out); `None` when none is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let s = sorted_finite(values);
        Some(Spread {
            n: s.len(),
            min: *s.first()?,
            p5: quantile(&s, POSITIVE_PERCENTILE)?,
            p50: quantile(&s, 0.5)?,
            p99: quantile(&s, 0.99)?,
            max: *s.last()?,
        })
    }
}

/// An exponential upper tail fitted on the fitting scale: `P(X > u + y) = rate * exp(-y / scale)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tail {
    /// Where the tail starts (the largest value below the tail points).
    pub u: f64,
    /// The mean excess over `u` of the tail points.
    pub scale: f64,
    /// The fraction of the values above `u` (tail points / all).
    pub rate: f64,
    /// How many tail points.
    pub points: usize,
}

impl Tail {
    /// Fits the `m` largest of ascending `sorted` values (`m < sorted.len()`).
    pub fn fit(sorted: &[f64], m: usize) -> Option<Tail> {
        let n = sorted.len();
        if m == 0 || m >= n {
            return None;
        }
        let u = sorted[n - m - 1];
        let scale = sorted[n - m..].iter().map(|x| x - u).sum::<f64>() / m as f64;
        Some(Tail {
            u,
            scale,
            rate: m as f64 / n as f64,
            points: m,
        })
    }

    /// The value exceeded with probability `p` (at most `rate`).
    pub fn quantile(&self, p: f64) -> f64 {
        self.u + self.scale * (self.rate / p).ln().max(0.0)
    }

    /// The probability of exceeding `z` (at least `u`).
    pub fn exceedance(&self, z: f64) -> f64 {
        if self.scale <= 0.0 {
            return if z > self.u { 0.0 } else { self.rate };
        }
        self.rate * (-(z - self.u).max(0.0) / self.scale).exp()
    }
}

/// The number of tail points fitted for `n` windows: a tenth, between 10 and 100.
pub fn tail_points(n: usize) -> usize {
    (n / 10).clamp(10, 100).min(n.saturating_sub(1))
}

/// How the quiet bound was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimate {
    /// The empirical quantile: enough windows to observe it.
    Empirical,
    /// Extrapolated from an exponential tail.
    Tail(Tail),
}

/// The quiet footage's windows and the bound they give.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietBound {
    /// The window minimums, ascending, on the fitting scale.
    windows: Vec<f64>,
    /// The bound, on the fitting scale.
    pub z: f64,
    /// The bound on the metric's scale.
    pub value: f64,
    /// How it was found.
    pub estimate: Estimate,
}

impl QuietBound {
    /// The `1 - q` quantile of the `k`-frame window minimums of `quiet` (in recording order),
    /// `q = target.per_window()`. `None` with fewer than [`MIN_WINDOWS`] windows.
    pub fn estimate(
        scale: Scale,
        quiet: &[f64],
        enter_frames: u32,
        target: &Target,
    ) -> Option<Self> {
        let fit: Vec<f64> = quiet
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| scale.to_fit(x))
            .collect();
        let windows = sorted_finite(&window_minimums(&fit, enter_frames as usize));
        let n = windows.len();
        if n < MIN_WINDOWS {
            return None;
        }
        let q = target.per_window();
        let m = tail_points(n);
        let (z, estimate) = if n as f64 * q >= m as f64 {
            (quantile(&windows, 1.0 - q)?, Estimate::Empirical)
        } else {
            let tail = Tail::fit(&windows, m)?;
            (tail.quantile(q), Estimate::Tail(tail))
        };
        Some(QuietBound {
            value: scale.from_fit(z),
            windows,
            z,
            estimate,
        })
    }

    /// How many windows the bound rests on.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// The estimated probability that a window reaches `z` (fitting scale), by the same model:
    /// the empirical fraction where the data reach it, the fitted tail beyond.
    pub fn exceedance(&self, z: f64) -> f64 {
        let n = self.windows.len() as f64;
        let above = self.windows.len() - self.windows.partition_point(|&w| w < z);
        match self.estimate {
            Estimate::Tail(t) if z > t.u => t.exceedance(z),
            _ => above as f64 / n,
        }
    }
}

/// Why no threshold was proposed for a label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// Too few quiet windows to estimate a tail.
    TooFewQuiet {
        /// Windows there were.
        windows: usize,
    },
    /// The quiet bound reaches the positives' 5th percentile.
    Overlap {
        /// The quiet bound (metric scale).
        bound: f64,
        /// The positives' 5th percentile.
        p5: f64,
    },
    /// The quiet bound is at the top of the metric's range.
    Saturated {
        /// The quiet bound (metric scale).
        bound: f64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::TooFewQuiet { windows } => write!(
                f,
                "too little quiet footage: {windows} windows of enter_frames frames, at least \
                 {MIN_WINDOWS} needed"
            ),
            Refusal::Overlap { bound, p5 } => write!(
                f,
                "quiet and positive scores overlap: the quiet bound {bound:.4} is at or above \
                 the positives' 5th percentile {p5:.4}; no threshold meets the false-alarm \
                 target and keeps the examples (better prompts, background texts or examples \
                 are needed)"
            ),
            Refusal::Saturated { bound } => write!(
                f,
                "the quiet footage alone reaches {bound:.4}, the top of the scale: no threshold \
                 meets the false-alarm target"
            ),
        }
    }
}

/// The proposal for one label.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The quiet frames' scores.
    pub quiet: Option<Spread>,
    /// The positive examples' scores, when there are any.
    pub positives: Option<Spread>,
    /// The quiet bound, when there were enough windows.
    pub bound: Option<QuietBound>,
    /// The threshold, or why there is none.
    pub outcome: Result<f64, Refusal>,
}

impl Proposal {
    /// The positives' 5th percentile minus the quiet bound (metric scale), when both exist.
    pub fn margin(&self) -> Option<f64> {
        Some(self.positives?.p5 - self.bound.as_ref()?.value)
    }

    /// The expected false alarms a day at `threshold` by the quiet model.
    pub fn false_alarms_per_day(
        &self,
        scale: Scale,
        target: &Target,
        threshold: f64,
    ) -> Option<f64> {
        let bound = self.bound.as_ref()?;
        Some(bound.exceedance(scale.to_fit(threshold)) * target.fps * DAY_S)
    }
}

/// `x` rounded to `decimals` places, up (`ceil`) or to the nearest.
fn round_to(x: f64, decimals: i32, up: bool) -> f64 {
    let f = 10f64.powi(decimals);
    if up {
        (x * f).ceil() / f
    } else {
        (x * f).round() / f
    }
}

/// Proposes a threshold for one label from its quiet scores (in recording order) and its
/// positive examples' scores (any order; empty for none). See the module documentation.
pub fn propose(
    scale: Scale,
    quiet: &[f64],
    positives: &[f64],
    enter_frames: u32,
    target: &Target,
) -> Proposal {
    let quiet_spread = Spread::of(quiet);
    let positive_spread = Spread::of(positives);
    let bound = QuietBound::estimate(scale, quiet, enter_frames, target);
    let outcome = match (&bound, positive_spread) {
        (None, _) => Err(Refusal::TooFewQuiet {
            windows: quiet.len().saturating_sub(enter_frames.max(1) as usize - 1),
        }),
        (Some(b), Some(p)) if b.value >= p.p5 => Err(Refusal::Overlap {
            bound: b.value,
            p5: p.p5,
        }),
        (Some(b), _) if b.value >= scale.max() - 1e-6 => Err(Refusal::Saturated { bound: b.value }),
        (Some(b), None) => Ok(round_to(b.value, 4, true).min(scale.max())),
        (Some(b), Some(p)) => {
            let mid = scale.from_fit((b.z + scale.to_fit(p.p5)) / 2.0);
            // The fewest decimals that keep the rounded threshold strictly between the two.
            Ok((2..=7)
                .map(|d| round_to(mid, d, false))
                .find(|&t| t > b.value && t < p.p5)
                .unwrap_or(mid))
        }
    };
    Proposal {
        quiet: quiet_spread,
        positives: positive_spread,
        bound,
        outcome,
    }
}

#[cfg(test)]
mod tests;

//! Pure: which frames the store keeps, and the compact form of their embeddings.
//!
//! A frame is stored when `sample_s` has passed since the last stored one, or at once when its
//! embedding moved more than `change` in cosine distance (`1 - cos`, 0 for the same direction,
//! 1 for orthogonal, 2 for opposite) from the last stored embedding: a scene that changes is
//! kept even between samples. Embeddings are stored as int8 with one scale, as the matcher's
//! int8 rows (`max |x| / 127`): 512 bytes plus 4 for D=512, with an error under half a step.
//!
//! Some stored frames also get a thumbnail ([`ThumbnailPolicy`], the reasons in
//! [`super::thumbnail`]): the first, every event start, a changed scene at most every
//! [`MIN_GAP`], a still one every `thumbnail_s`.

use std::time::Duration;

/// Decides which frames are stored.
#[derive(Debug, Clone)]
pub struct Sampler {
    every: Duration,
    change: f32,
    last: Option<(Duration, Vec<f32>)>,
}

impl Sampler {
    /// Stores a frame every `every`, and any frame further than `change` (cosine distance) from
    /// the last stored one.
    pub fn new(every: Duration, change: f32) -> Sampler {
        Sampler {
            every,
            change,
            last: None,
        }
    }

    /// Whether the frame at `now` with `embedding` is stored (it then becomes the last stored).
    pub fn offer(&mut self, now: Duration, embedding: &[f32]) -> bool {
        self.offer_why(now, embedding).is_some()
    }

    /// [`Sampler::offer`], saying why a stored frame is stored: its interval passed (or it is
    /// the first, or the clock went back), or its embedding moved past the change distance.
    pub fn offer_why(&mut self, now: Duration, embedding: &[f32]) -> Option<Kept> {
        let kept = match &self.last {
            None => Some(Kept::Interval),
            Some((at, _)) if now.saturating_sub(*at) >= self.every || now < *at => {
                Some(Kept::Interval)
            }
            Some((_, last)) if cosine_distance(last, embedding) > self.change => Some(Kept::Change),
            Some(_) => None,
        };
        if kept.is_some() {
            match &mut self.last {
                Some((at, last)) if last.len() == embedding.len() => {
                    *at = now;
                    last.copy_from_slice(embedding);
                }
                _ => self.last = Some((now, embedding.to_vec())),
            }
        }
        kept
    }
}

/// `1 - cos(a, b)`; 1 when either is zero.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    1.0 - ab / (aa.sqrt() * bb.sqrt())
}

/// `v` normalised to unit length, then as int8 values and their scale (`x ≈ value * scale`).
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs())) / norm;
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let values = v
        .iter()
        .map(|x| (x / norm / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (values, scale)
}

/// The f32 embedding back from [`quantize`]'s form.
pub fn dequantize(values: &[i8], scale: f32) -> Vec<f32> {
    values.iter().map(|&x| f32::from(x) * scale).collect()
}

/// The dot product of a stored int8 embedding with a unit-length `query`: its cosine, within
/// the quantization error.
pub fn score(values: &[i8], scale: f32, query: &[f32]) -> f32 {
    dot(values, query, f32::from) * scale
}

/// [`score`] of an embedding as the database holds it: its int8 values as bytes.
pub fn score_bytes(bytes: &[u8], scale: f32, query: &[f32]) -> f32 {
    dot(bytes, query, |b| f32::from(b as i8)) * scale
}

/// `values` dotted with `query` in eight lanes (which the compiler vectorizes); the shorter
/// length counts.
#[inline(always)]
fn dot<T: Copy>(values: &[T], query: &[f32], f: impl Fn(T) -> f32) -> f32 {
    let mut sums = [0f32; 8];
    let chunks = values.chunks_exact(8).zip(query.chunks_exact(8));
    let body = chunks.len() * 8;
    for (v, q) in chunks {
        for i in 0..8 {
            sums[i] += f(v[i]) * q[i];
        }
    }
    let rest: f32 = values[body..]
        .iter()
        .zip(query.get(body..).unwrap_or(&[]))
        .map(|(&v, q)| f(v) * q)
        .sum();
    sums.iter().sum::<f32>() + rest
}

/// The least time between two thumbnails of a changing scene.
pub const MIN_GAP: Duration = Duration::from_secs(5);
/// Thumbnails of changes and event starts that may come in a burst (see [`ThumbnailPolicy`]).
pub const BURST: f64 = 30.0;

/// Why a frame is sampled, as [`super::sample::Sampler::offer_why`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Its interval passed (or it is the first).
    Interval,
    /// Its embedding moved past the change distance.
    Change,
}

/// Decides which frames get a thumbnail, within a budget. Time comes in as a value.
///
/// A stored frame gets one when `every` has passed since the last thumbnail (a still scene,
/// and the first frame). A changed scene (at most every [`MIN_GAP`]) and an event start get one
/// sooner, each taking a token from a bucket of [`BURST`] that refills at one per `2 * every`:
/// a burst of activity is kept whole, and a scene that never settles still takes at most one
/// thumbnail per `every` plus one per `2 * every` (2,160 a day at `every` = 60 s, about 10 MB at
/// 4.7 kB each on disk), which keeps a camera-day at one frame a second under 60 MB.
#[derive(Debug, Clone)]
pub struct ThumbnailPolicy {
    every: Option<Duration>,
    last: Option<Duration>,
    tokens: f64,
    refilled: Duration,
}

impl ThumbnailPolicy {
    /// A thumbnail at least every `every` (`None`: no thumbnails at all).
    pub fn new(every: Option<Duration>) -> ThumbnailPolicy {
        ThumbnailPolicy {
            every,
            last: None,
            tokens: BURST,
            refilled: Duration::ZERO,
        }
    }

    /// Whether the frame at `now` gets a thumbnail: `kept` is why the sampler kept it (`None`
    /// when it did not), `start` whether an event starts on it. A yes becomes the last one.
    pub fn due(&mut self, now: Duration, kept: Option<Kept>, start: bool) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        let refill = now.saturating_sub(self.refilled).as_secs_f64() / (2.0 * every.as_secs_f64());
        self.tokens = (self.tokens + refill).min(BURST);
        self.refilled = now;
        let since = match self.last {
            // The first, or the clock went back.
            None => None,
            Some(t) if now < t => None,
            Some(t) => Some(now - t),
        };
        let interval = kept.is_some() && since.is_none_or(|s| s >= every);
        let sooner = start || (kept == Some(Kept::Change) && since.is_none_or(|s| s >= MIN_GAP));
        let due = if interval {
            true
        } else if sooner && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        };
        if due {
            self.last = Some(now);
        }
        due
    }
}

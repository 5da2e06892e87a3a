//! Pure: which frames the store keeps, and the compact form of their embeddings.
//!
//! A frame is stored when `sample_s` has passed since the last stored one, or at once when its
//! embedding moved more than `change` in cosine distance (`1 - cos`, 0 for the same direction,
//! 1 for orthogonal, 2 for opposite) from the last stored embedding: a scene that changes is
//! kept even between samples. Embeddings are stored as int8 with one scale, as the matcher's
//! int8 rows (`max |x| / 127`): 512 bytes plus 4 for D=512, with an error under half a step.

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
        let keep = match &self.last {
            None => true,
            Some((at, last)) => {
                now.saturating_sub(*at) >= self.every
                    || now < *at
                    || cosine_distance(last, embedding) > self.change
            }
        };
        if keep {
            match &mut self.last {
                Some((at, last)) if last.len() == embedding.len() => {
                    *at = now;
                    last.copy_from_slice(embedding);
                }
                _ => self.last = Some((now, embedding.to_vec())),
            }
        }
        keep
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

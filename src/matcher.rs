//! Scores a frame embedding against the label embeddings.
//!
//! Each label is one or more prompt texts (an ensemble): their L2-normalised embeddings are
//! averaged and normalised again, as CLIP's zero-shot classifiers do. A frame's score for a label is
//! the cosine between the two; probabilities are a softmax of `logit_scale * cosine` over every
//! label, background labels ("an empty scene") included. Background labels compete for the
//! probability mass but are never reported as matches.
//!
//! Pure and allocation-free per frame: [`Matcher::score`] writes into a reused [`Scores`].
//!
//! Large prompt sets are scored from an int8 copy of the label matrix ([`Storage`]): a quarter of
//! the bytes to stream per frame, for cosines off by about 3e-4 (RMS) from the f32 ones.

/// Errors building a matcher.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatcherError {
    /// An embedding has the wrong width.
    #[error("label {label:?}: embedding has {got} values, the model's embeddings have {dim}")]
    Dim {
        /// The label.
        label: String,
        /// Its width.
        got: usize,
        /// The expected width.
        dim: usize,
    },
    /// A label without any prompt embedding, or an all-zero one.
    #[error("label {label:?}: no usable prompt embedding")]
    Empty {
        /// The label.
        label: String,
    },
    /// No labels.
    #[error("no labels to match against")]
    NoLabels,
}

/// One label as the matcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// The label's name (e.g. "person").
    pub name: String,
    /// The prompt text shown in events (the first of the ensemble).
    pub prompt: String,
    /// Whether this is a background label that never matches.
    pub background: bool,
}

/// Per-label results for one frame, indexed like [`Matcher::labels`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// Cosine similarity per label.
    pub cos: Vec<f32>,
    /// Softmax probability per label.
    pub prob: Vec<f32>,
    /// The image embedding quantized to i16 when the matcher holds int8 rows (reused).
    query: Vec<i16>,
}

/// How a [`Matcher`] holds its label matrix for scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// f32 rows: exact to f32 rounding.
    F32,
    /// int8 rows with one scale each, scored against the image embedding quantized to i16.
    ///
    /// The rows are a quarter of the f32 bytes: at 1000 prompts of D=512 the f32 matrix is 2 MB,
    /// as large as a core's L2 on the build machine, and scoring streams it at memory speed
    /// (`benches/pipeline.rs`, `match_prompts_d512`). The error of a cosine is at most half a
    /// quantization step of the row times the image's L1 norm (plus the i16 query's much smaller
    /// term). On CLIP-like unit vectors of width 512 that is 3e-4 RMS and 1.3e-3 at worst over
    /// 20,000 cosines (tests below): several times less than an int8 image tower moves them.
    Int8,
}

impl Storage {
    /// The storage [`Matcher::new`] picks: int8 once the f32 matrix would exceed
    /// [`INT8_FROM_VALUES`] values, f32 below (small sets stay exact; they take microseconds
    /// either way).
    pub fn for_size(labels: usize, dim: usize) -> Storage {
        if labels * dim > INT8_FROM_VALUES && dim <= MAX_INT8_DIM {
            Storage::Int8
        } else {
            Storage::F32
        }
    }
}

/// Label matrices larger than this many values (1 MiB of f32: 512 prompts at D=512) are scored
/// in int8.
pub const INT8_FROM_VALUES: usize = 1 << 18;

/// The widest embedding scored in int8: the i16 query keeps at least 11 bits below this (see
/// [`query_max`]).
const MAX_INT8_DIM: usize = 8192;

/// The largest |value| of the i16 query for embeddings of width `dim`: `dim` products of an int8
/// row value (at most 127) and the query must add up within an i32.
fn query_max(dim: usize) -> f32 {
    (i32::MAX as usize / (127 * dim.max(1))).min(i16::MAX as usize) as f32
}

/// The label matrix in int8: row `r` is `values[r * dim..][..dim] * scales[r]`.
#[derive(Debug, Clone)]
struct Int8Rows {
    values: Vec<i8>,
    scales: Vec<f32>,
    /// The sum of each row's int8 values (the VNNI kernel's correction, see [`dot_rows_i8`]).
    sums: Vec<i32>,
}

impl Int8Rows {
    /// Quantizes each row symmetrically: its largest |value| becomes 127.
    fn quantize(matrix: &[f32], dim: usize) -> Int8Rows {
        let mut values = Vec::with_capacity(matrix.len());
        let mut scales = Vec::with_capacity(matrix.len() / dim);
        for row in matrix.chunks_exact(dim) {
            let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            values.extend(row.iter().map(|x| (x / scale).round() as i8));
            scales.push(scale);
        }
        let sums = values
            .chunks_exact(dim)
            .map(|r| r.iter().map(|&x| x as i32).sum())
            .collect();
        Int8Rows {
            values,
            scales,
            sums,
        }
    }
}

/// L2-normalises `v` in place; returns false for a zero (or non-finite) vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// The dot product of two equally long vectors.
///
/// Sixteen independent partial sums: a plain `zip().map().sum()` is one serial chain of float
/// additions, which the compiler may not reorder, so it runs one multiply-add per add latency.
/// With sixteen lanes it becomes four (SSE) or two (AVX/NEON) vector accumulators: about 5x
/// faster when scoring a frame against hundreds of prompts (`benches/pipeline.rs`).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    debug_assert_eq!(a.len(), b.len());
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + rest
}

/// `out[r]` = [`dot`] of row `r` of `matrix` (rows of `v.len()` values) with `v`: the kernel of
/// [`Matcher::score`].
///
/// The portable build targets the x86-64 baseline (SSE2: four lanes, separate multiply and add),
/// so on x86-64 CPUs with AVX2 and FMA, checked at run time, the rows go through an 8-lane fused
/// multiply-add version instead (`benches/pipeline.rs`, `matching`). Elsewhere (NEON is the
/// aarch64 baseline) [`dot`] runs as built.
pub fn dot_rows(matrix: &[f32], v: &[f32], out: &mut [f32]) {
    debug_assert_eq!(matrix.len(), v.len() * out.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            x86::dot_rows_avx2_fma(matrix, v, out)
        };
        return;
    }
    for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
        *o = dot(row, v);
    }
}

/// `out[r]` = the dot product of int8 row `r` of `matrix` with the i16 vector `v`, computed
/// exactly (the caller keeps `v` within [`query_max`]) and returned as f32. `row_sums[r]` is the
/// sum of row `r`'s values.
///
/// On x86-64 CPUs with AVX-512 VNNI (checked at run time) it runs [`x86::dot_rows_i8_vnni`], 64
/// byte products per instruction; with AVX2, the plain lanes below compiled for 256-bit
/// registers; elsewhere the plain lanes as built, which the compiler vectorizes (widening
/// multiply-adds: `pmaddwd` on x86, `smlal` on NEON).
fn dot_rows_i8(matrix: &[i8], row_sums: &[i32], v: &[i16], out: &mut [f32]) {
    debug_assert_eq!(matrix.len(), v.len() * out.len());
    debug_assert_eq!(row_sums.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    {
        if v.len() <= MAX_INT8_DIM
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            // SAFETY: the CPU has the three extensions, checked just above.
            #[allow(unsafe_code)]
            unsafe {
                x86::dot_rows_i8_vnni(matrix, row_sums, v, out)
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            #[allow(unsafe_code)]
            unsafe {
                x86::dot_rows_i8_avx2(matrix, v, out)
            };
            return;
        }
    }
    let _ = row_sums;
    dot_rows_i8_lanes(matrix, v, out);
}

/// [`dot_rows_i8`]'s portable form.
fn dot_rows_i8_lanes(matrix: &[i8], v: &[i16], out: &mut [f32]) {
    for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
        *o = dot_i8(row, v) as f32;
    }
}

/// The exact i32 dot product of an int8 and an i16 vector (32 partial sums).
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i16]) -> i32 {
    const LANES: usize = 32;
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0i32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] as i32 * y[i] as i32;
        }
    }
    let rest: i32 = a_rest
        .iter()
        .zip(b_rest)
        .map(|(x, y)| *x as i32 * *y as i32)
        .sum();
    acc.iter().sum::<i32>() + rest
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::dot_rows_i8`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_rows_i8_avx2(matrix: &[i8], v: &[i16], out: &mut [f32]) {
        super::dot_rows_i8_lanes(matrix, v, out);
    }

    /// [`super::dot_rows_i8`] with AVX-512 VNNI, whose `vpdpbusd` adds up 64 products of an
    /// unsigned and a signed byte per instruction, straight from the int8 rows.
    ///
    /// The i16 query is split into bytes, `q = 256 * hi + lo`, with `lo` in 0..=255 and `hi` in
    /// -128..=127. `lo` multiplies the rows as it is; `hi` goes in as `hi + 128` (unsigned), which
    /// adds `256 * 128 * sum(row)` to the result, taken off with `row_sums`. The sums are computed
    /// modulo 2^32 (vector adds wrap): intermediate lanes may wrap, but the true dot product is
    /// below 2^31 in magnitude (the caller's [`super::query_max`]), so the wrapped result is
    /// exact. The last `dim % 64` values go through masked loads (zeros past the end). `v.len()`
    /// must be at most `MAX_INT8_DIM` (it panics otherwise).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn dot_rows_i8_vnni(matrix: &[i8], row_sums: &[i32], v: &[i16], out: &mut [f32]) {
        let dim = v.len();
        let mut hi = [0u8; super::MAX_INT8_DIM];
        let mut lo = [0u8; super::MAX_INT8_DIM];
        for (k, &q) in v.iter().enumerate() {
            lo[k] = q as u8;
            hi[k] = ((q >> 8) as u8) ^ 0x80;
        }
        let body = dim - dim % 64;
        let tail: __mmask64 = (1u64 << (dim % 64)) - 1;
        for ((row, o), &sum) in matrix.chunks_exact(dim).zip(out).zip(row_sums) {
            let mut acc_hi = _mm512_setzero_si512();
            let mut acc_lo = _mm512_setzero_si512();
            // SAFETY: every load starts inside its slice (`k < dim`, and `hi`, `lo` hold at least
            // `dim` bytes) and reads 64 bytes only below `body`; the masked loads of the tail
            // read only the `dim - body` bytes left.
            #[allow(unsafe_code)]
            unsafe {
                let mut k = 0;
                while k < body {
                    let r = _mm512_loadu_si512(row.as_ptr().add(k).cast());
                    let h = _mm512_loadu_si512(hi.as_ptr().add(k).cast());
                    let l = _mm512_loadu_si512(lo.as_ptr().add(k).cast());
                    acc_hi = _mm512_dpbusd_epi32(acc_hi, h, r);
                    acc_lo = _mm512_dpbusd_epi32(acc_lo, l, r);
                    k += 64;
                }
                if body < dim {
                    let r = _mm512_maskz_loadu_epi8(tail, row.as_ptr().add(body));
                    let h = _mm512_maskz_loadu_epi8(tail, hi.as_ptr().add(body).cast());
                    let l = _mm512_maskz_loadu_epi8(tail, lo.as_ptr().add(body).cast());
                    acc_hi = _mm512_dpbusd_epi32(acc_hi, h, r);
                    acc_lo = _mm512_dpbusd_epi32(acc_lo, l, r);
                }
            }
            let lanes = _mm512_add_epi32(_mm512_slli_epi32::<8>(acc_hi), acc_lo);
            let dot = _mm512_reduce_add_epi32(lanes).wrapping_sub(sum.wrapping_mul(256 * 128));
            *o = dot as f32;
        }
    }

    /// [`super::dot_rows`] compiled for AVX2 + FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_rows_avx2_fma(matrix: &[f32], v: &[f32], out: &mut [f32]) {
        for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
            *o = dot_fma(row, v);
        }
    }

    /// [`super::dot`] with 32 partial sums (four 8-lane accumulators, enough to keep two FMA
    /// units busy through their latency) and fused multiply-adds.
    #[target_feature(enable = "avx2,fma")]
    fn dot_fma(a: &[f32], b: &[f32]) -> f32 {
        const LANES: usize = 32;
        let (a_chunks, a_rest) = a.as_chunks::<LANES>();
        let (b_chunks, b_rest) = b.as_chunks::<LANES>();
        let mut acc = [0f32; LANES];
        for (x, y) in a_chunks.iter().zip(b_chunks) {
            for i in 0..LANES {
                acc[i] = x[i].mul_add(y[i], acc[i]);
            }
        }
        let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + rest
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let na = dot(a, a).sqrt();
    let nb = dot(b, b).sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// The label embeddings of a prompt set and the softmax scale.
#[derive(Debug, Clone)]
pub struct Matcher {
    labels: Vec<Label>,
    /// `labels.len() * dim` values, each row L2-normalised.
    matrix: Vec<f32>,
    /// The same rows in int8 when they are scored that way ([`Storage::Int8`]).
    int8: Option<Int8Rows>,
    dim: usize,
    logit_scale: f32,
}

impl Matcher {
    /// Builds a matcher from labels and the embeddings of each label's prompts (one or more each),
    /// scoring in the [`Storage::for_size`] of its matrix.
    pub fn new(
        entries: Vec<(Label, Vec<Vec<f32>>)>,
        dim: usize,
        logit_scale: f32,
    ) -> Result<Matcher, MatcherError> {
        if entries.is_empty() {
            return Err(MatcherError::NoLabels);
        }
        let mut labels = Vec::with_capacity(entries.len());
        let mut matrix = Vec::with_capacity(entries.len() * dim);
        for (label, embeddings) in entries {
            let mut mean = vec![0f32; dim];
            let mut used = 0;
            for e in &embeddings {
                if e.len() != dim {
                    return Err(MatcherError::Dim {
                        label: label.name.clone(),
                        got: e.len(),
                        dim,
                    });
                }
                let mut e = e.clone();
                if normalize(&mut e) {
                    mean.iter_mut().zip(&e).for_each(|(m, x)| *m += x);
                    used += 1;
                }
            }
            if used == 0 || !normalize(&mut mean) {
                return Err(MatcherError::Empty { label: label.name });
            }
            matrix.extend_from_slice(&mean);
            labels.push(label);
        }
        let storage = Storage::for_size(labels.len(), dim);
        Ok(Matcher {
            labels,
            matrix,
            int8: None,
            dim,
            logit_scale,
        }
        .with_storage(storage))
    }

    /// The same matcher scoring from `storage` (benches and tests compare the two).
    pub fn with_storage(mut self, storage: Storage) -> Matcher {
        self.int8 = match storage {
            Storage::F32 => None,
            Storage::Int8 => Some(Int8Rows::quantize(&self.matrix, self.dim)),
        };
        self
    }

    /// How the label matrix is scored.
    pub fn storage(&self) -> Storage {
        match self.int8 {
            Some(_) => Storage::Int8,
            None => Storage::F32,
        }
    }

    /// The labels, in score order.
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Scores an image embedding (any norm; it is normalised here) into `out`.
    pub fn score(&self, image: &[f32], out: &mut Scores) {
        assert_eq!(image.len(), self.dim, "image embedding width");
        let n = self.labels.len();
        out.cos.resize(n, 0.0);
        out.prob.resize(n, 0.0);
        let norm = dot(image, image).sqrt();
        let inv = if norm > 0.0 && norm.is_finite() {
            1.0 / norm
        } else {
            0.0
        };
        match &self.int8 {
            None => {
                dot_rows(&self.matrix, image, &mut out.cos);
                out.cos.iter_mut().for_each(|c| *c *= inv);
            }
            Some(rows) if inv > 0.0 => {
                // The query in i16: its largest |value| maps to query_max(dim).
                let max = image.iter().fold(0f32, |m, x| m.max(x.abs()));
                let step = max / query_max(self.dim);
                let per_step = 1.0 / step;
                out.query.clear();
                // Rounded half away from zero by hand: `f32::round` is a libm call on the x86-64
                // baseline (no SSE4.1), 512 of them a frame.
                out.query.extend(
                    image
                        .iter()
                        .map(|x| (x * per_step + 0.5f32.copysign(*x)) as i16),
                );
                dot_rows_i8(&rows.values, &rows.sums, &out.query, &mut out.cos);
                for (c, row_scale) in out.cos.iter_mut().zip(&rows.scales) {
                    *c *= row_scale * step * inv;
                }
            }
            // A zero or non-finite image embedding.
            Some(_) => out.cos.fill(0.0),
        }
        let max = out.cos.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (p, &c) in out.prob.iter_mut().zip(&out.cos) {
            *p = (self.logit_scale * (c - max)).exp();
            sum += *p;
        }
        out.prob.iter_mut().for_each(|p| *p /= sum);
    }

    /// The best label, background labels included, by cosine.
    pub fn best(&self, scores: &Scores) -> Option<usize> {
        scores
            .cos
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label(name: &str, background: bool) -> Label {
        Label {
            name: name.into(),
            prompt: format!("a photo of a {name}"),
            background,
        }
    }

    #[test]
    fn picks_the_closest_label() {
        let m = Matcher::new(
            vec![
                (label("x", false), vec![vec![1.0, 0.0, 0.0]]),
                (label("y", false), vec![vec![0.0, 1.0, 0.0]]),
                (label("empty", true), vec![vec![0.0, 0.0, 1.0]]),
            ],
            3,
            100.0,
        )
        .unwrap();
        let mut s = Scores::default();
        m.score(&[0.1, 2.0, 0.3], &mut s);
        assert_eq!(m.best(&s), Some(1));
        assert!(s.prob[1] > 0.99);
        assert!((s.prob.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn ensembles_average_normalised_embeddings() {
        let m = Matcher::new(
            vec![(label("x", false), vec![vec![10.0, 0.0], vec![0.0, 1.0]])],
            2,
            1.0,
        )
        .unwrap();
        let mut s = Scores::default();
        m.score(&[1.0, 1.0], &mut s);
        assert!((s.cos[0] - 1.0).abs() < 1e-6, "{:?}", s.cos);
    }

    #[test]
    fn bad_embeddings_are_errors() {
        assert_eq!(
            Matcher::new(vec![(label("x", false), vec![vec![1.0, 0.0]])], 3, 1.0).unwrap_err(),
            MatcherError::Dim {
                label: "x".into(),
                got: 2,
                dim: 3
            }
        );
        assert!(matches!(
            Matcher::new(vec![(label("x", false), vec![vec![0.0, 0.0]])], 2, 1.0),
            Err(MatcherError::Empty { .. })
        ));
        assert_eq!(
            Matcher::new(vec![], 2, 1.0).unwrap_err(),
            MatcherError::NoLabels
        );
    }

    /// `n` pseudo-random unit vectors of width `dim` (sums of uniforms: roughly Gaussian, like
    /// CLIP embeddings, whose values spread over every dimension).
    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| (0..4).map(|_| uniform()).sum()).collect();
                assert!(normalize(&mut v));
                v
            })
            .collect()
    }

    fn matcher_of(rows: &[Vec<f32>]) -> Matcher {
        let entries = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (label(&i.to_string(), false), vec![r.clone()]))
            .collect();
        Matcher::new(entries, rows[0].len(), 100.0).unwrap()
    }

    #[test]
    fn large_prompt_sets_are_scored_in_int8() {
        assert_eq!(
            matcher_of(&unit_vectors(100, 512, 1)).storage(),
            Storage::F32
        );
        assert_eq!(
            matcher_of(&unit_vectors(512, 512, 1)).storage(),
            Storage::F32
        );
        assert_eq!(
            matcher_of(&unit_vectors(513, 512, 1)).storage(),
            Storage::Int8
        );
        assert_eq!(Storage::for_size(1000, 512), Storage::Int8);
        assert_eq!(Storage::for_size(10, 100_000), Storage::F32);
    }

    /// All-extreme rows and queries of width 1024: the VNNI kernel's lanes wrap around 2^32
    /// (its hi-byte lanes alone add up to about 6.4e9) and must still land on the exact sum,
    /// which is just below 2^31; likewise with every sign flipped.
    #[test]
    fn int8_dot_rows_are_exact_where_the_lanes_wrap() {
        let dim = 1024;
        let q = query_max(dim) as i16;
        for sign in [1i16, -1] {
            let matrix = vec![127i8 * sign as i8; 2 * dim];
            let v = vec![q * sign; dim];
            let sums = vec![127 * sign as i32 * dim as i32; 2];
            let exact = (127 * q as i64 * dim as i64) as f32;
            assert!(exact < i32::MAX as f32 && exact > 2e9, "{exact}");
            let mut out = vec![f32::NAN; 2];
            dot_rows_i8(&matrix, &sums, &v, &mut out);
            assert_eq!(out, vec![exact; 2]);
            dot_rows_i8_lanes(&matrix, &v, &mut out);
            assert_eq!(out, vec![exact; 2]);
        }
    }

    /// What int8 scoring costs in accuracy on CLIP-like embeddings: 1000 prompts of width 512.
    #[test]
    fn int8_cosines_stay_close_to_f32_and_rank_alike() {
        let rows = unit_vectors(1000, 512, 7);
        let int8 = matcher_of(&rows);
        assert_eq!(int8.storage(), Storage::Int8);
        let exact = int8.clone().with_storage(Storage::F32);
        let (mut a, mut b) = (Scores::default(), Scores::default());
        let (mut worst, mut squares) = (0f32, 0f64);
        for (k, image) in unit_vectors(20, 512, 8).iter().enumerate() {
            // Some images close to one prompt, so that the ranking has a clear winner.
            let image: Vec<f32> = match k % 2 {
                0 => image
                    .iter()
                    .zip(&rows[k])
                    .map(|(x, r)| x + 2.0 * r)
                    .collect(),
                _ => image.clone(),
            };
            int8.score(&image, &mut a);
            exact.score(&image, &mut b);
            for (x, y) in a.cos.iter().zip(&b.cos) {
                worst = worst.max((x - y).abs());
                squares += ((x - y) as f64).powi(2);
            }
            if k % 2 == 0 {
                assert_eq!(int8.best(&a), Some(k));
                assert_eq!(exact.best(&b), Some(k));
            }
            let sum: f32 = a.prob.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        }
        let rms = (squares / 20_000.0).sqrt();
        assert!(worst > 0.0, "the int8 path was not taken");
        assert!(
            rms < 5e-4 && worst < 2e-3,
            "int8 cosine error: RMS {rms}, worst {worst}"
        );
    }

    #[test]
    fn int8_scores_of_a_zero_or_broken_image_are_zero() {
        let m = matcher_of(&unit_vectors(3, 8, 3)).with_storage(Storage::Int8);
        let mut s = Scores::default();
        for image in [[0.0; 8], [f32::NAN; 8]] {
            m.score(&image, &mut s);
            assert_eq!(s.cos, vec![0.0; 3]);
            assert!(
                s.prob.iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6),
                "{:?}",
                s.prob
            );
        }
    }

    proptest! {
        #[test]
        fn dot_matches_a_double_precision_sum(
            pairs in prop::collection::vec((-1.0f32..1.0, -1.0f32..1.0), 0..600),
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let bound = 1e-6 * (a.len() as f64 + 1.0);
            prop_assert!((dot(&a, &b) as f64 - exact).abs() <= bound, "{} vs {exact}", dot(&a, &b));
        }

        #[test]
        fn dot_rows_matches_a_double_precision_sum(
            rows in 1usize..6,
            v in prop::collection::vec(-1.0f32..1.0, 1..600),
            seed in 0u32..1000,
        ) {
            let matrix: Vec<f32> = (0..rows * v.len())
                .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut out = vec![f32::NAN; rows];
            dot_rows(&matrix, &v, &mut out);
            let bound = 1e-6 * (v.len() as f64 + 1.0);
            for (row, got) in matrix.chunks_exact(v.len()).zip(&out) {
                let exact: f64 = row.iter().zip(&v).map(|(x, y)| *x as f64 * *y as f64).sum();
                prop_assert!((*got as f64 - exact).abs() <= bound, "{got} vs {exact}");
            }
        }

        /// The int8 path's error, row by row, within its analytic bound: a row value is off by at
        /// most half its step `s`, a query value by half the query's step `t`, so the dot product
        /// is off by at most (s * |x|_1 + t * |r|_1 + dim * s * t / 2) / 2, over |x|.
        #[test]
        fn int8_scores_stay_within_their_quantization_bound(
            rows in 1usize..6,
            image in prop::collection::vec(-1.0f32..1.0, 1..700),
            seed in 0u64..1000,
        ) {
            let dim = image.len();
            let norm = image.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assume!(norm > 1e-3);
            let rows = unit_vectors(rows, dim, seed);
            let int8 = matcher_of(&rows).with_storage(Storage::Int8);
            let exact = int8.clone().with_storage(Storage::F32);
            let (mut a, mut b) = (Scores::default(), Scores::default());
            int8.score(&image, &mut a);
            exact.score(&image, &mut b);
            let q = int8.int8.as_ref().unwrap();
            let max = image.iter().fold(0f32, |m, x| m.max(x.abs()));
            let t = max / query_max(dim);
            let x1: f32 = image.iter().map(|x| x.abs()).sum();
            for (r, row) in rows.iter().enumerate() {
                let s = q.scales[r];
                let r1: f32 = row.iter().map(|x| x.abs()).sum();
                let bound = (s * x1 + t * r1 + dim as f32 * s * t / 2.0) / 2.0 / norm + 1e-5;
                let err = (a.cos[r] - b.cos[r]).abs();
                prop_assert!(err <= bound, "row {r}: {} vs {}, bound {bound}", a.cos[r], b.cos[r]);
            }
        }

        /// Every kernel this CPU can run gives the exact integer dot products (the portable
        /// lanes always, and the dispatched one: AVX-512 VNNI or AVX2 on x86), at the largest
        /// query values the matcher uses.
        #[test]
        fn int8_dot_rows_are_exact(
            rows in 1usize..5,
            dim in 1usize..300,
            seed in 0u64..10_000,
            extreme in any::<bool>(),
        ) {
            let mut state = seed;
            let mut next = move || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as u32
            };
            let qmax = query_max(dim) as i32;
            let matrix: Vec<i8> = (0..rows * dim)
                .map(|_| if extreme { [-127, 127][next() as usize % 2] } else { (next() % 255) as i32 - 127 } as i8)
                .collect();
            let v: Vec<i16> = (0..dim)
                .map(|_| if extreme { [-qmax, qmax][next() as usize % 2] } else { (next() % (2 * qmax as u32 + 1)) as i32 - qmax } as i16)
                .collect();
            let sums: Vec<i32> = matrix.chunks_exact(dim).map(|r| r.iter().map(|&x| x as i32).sum()).collect();
            let exact: Vec<f32> = matrix
                .chunks_exact(dim)
                .map(|r| r.iter().zip(&v).map(|(&a, &b)| a as i64 * b as i64).sum::<i64>() as f32)
                .collect();
            let mut out = vec![f32::NAN; rows];
            dot_rows_i8(&matrix, &sums, &v, &mut out);
            prop_assert_eq!(&out, &exact);
            let mut out = vec![f32::NAN; rows];
            dot_rows_i8_lanes(&matrix, &v, &mut out);
            prop_assert_eq!(&out, &exact);
        }

        #[test]
        fn probabilities_form_a_distribution_and_follow_cosines(
            rows in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 4), 1..20),
            image in prop::collection::vec(-1.0f32..1.0, 4),
        ) {
            let entries: Vec<_> = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.iter().any(|v| v.abs() > 1e-3))
                .map(|(i, r)| (label(&i.to_string(), false), vec![r.clone()]))
                .collect();
            prop_assume!(!entries.is_empty());
            let m = Matcher::new(entries, 4, 50.0).unwrap();
            let mut s = Scores::default();
            m.score(&image, &mut s);
            let sum: f32 = s.prob.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-4);
            for i in 0..s.cos.len() {
                prop_assert!(s.cos[i] >= -1.0001 && s.cos[i] <= 1.0001);
                for j in 0..s.cos.len() {
                    if s.cos[i] > s.cos[j] {
                        prop_assert!(s.prob[i] >= s.prob[j]);
                    }
                }
            }
        }
    }
}

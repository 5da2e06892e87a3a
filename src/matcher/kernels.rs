//! The arithmetic of [`Matcher::score`](super::Matcher::score): dot products of the frame
//! embedding with every row of the label matrix, in f32 or from int8 rows, with the SIMD paths
//! picked at run time. Pure functions on slices.

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
pub(super) const MAX_INT8_DIM: usize = 8192;

/// The largest |value| of the i16 query for embeddings of width `dim`: `dim` products of an int8
/// row value (at most 127) and the query must add up within an i32.
pub(super) fn query_max(dim: usize) -> f32 {
    (i32::MAX as usize / (127 * dim.max(1))).min(i16::MAX as usize) as f32
}

/// The label matrix in int8: row `r` is `values[r * dim..][..dim] * scales[r]`.
#[derive(Debug, Clone)]
pub(super) struct Int8Rows {
    pub(super) values: Vec<i8>,
    pub(super) scales: Vec<f32>,
    /// The sum of each row's int8 values (the VNNI kernel's correction, see [`dot_rows_i8`]).
    pub(super) sums: Vec<i32>,
}

impl Int8Rows {
    /// Quantizes each row symmetrically: its largest |value| becomes 127.
    pub(super) fn quantize(matrix: &[f32], dim: usize) -> Int8Rows {
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
pub(super) fn dot_rows_i8(matrix: &[i8], row_sums: &[i32], v: &[i16], out: &mut [f32]) {
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
pub(super) fn dot_rows_i8_lanes(matrix: &[i8], v: &[i16], out: &mut [f32]) {
    for (row, o) in matrix.chunks_exact(v.len()).zip(out) {
        *o = dot_i8(row, v) as f32;
    }
}

/// The exact i32 dot product of an int8 and an i16 vector (32 partial sums).
#[inline(always)]
pub(super) fn dot_i8(a: &[i8], b: &[i16]) -> i32 {
    dot_lanes(a, b, i32::from)
}

/// [`dot_i8`] of `a`'s values as `value` reads them (int8 values held as bytes, for one).
#[inline(always)]
fn dot_lanes<T: Copy>(a: &[T], b: &[i16], value: impl Fn(T) -> i32) -> i32 {
    const LANES: usize = 32;
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0i32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += value(x[i]) * y[i] as i32;
        }
    }
    let rest: i32 = a_rest
        .iter()
        .zip(b_rest)
        .map(|(x, y)| value(*x) * *y as i32)
        .sum();
    acc.iter().sum::<i32>() + rest
}

/// [`dot_i8`] of an int8 row held as bytes (as the store's database holds it): AVX2 where the
/// CPU has it, the vectorized lanes elsewhere (NEON's `smlal` on a Pi).
fn dot_bytes_i8(a: &[u8], b: &[i16]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            #[allow(unsafe_code)]
            return unsafe { x86::dot_bytes_i8_avx2(a, b) };
        }
    }
    dot_lanes(a, b, |x: u8| i32::from(x as i8))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::dot_bytes_i8`] compiled for AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_bytes_i8_avx2(a: &[u8], b: &[i16]) -> i32 {
        super::dot_lanes(a, b, |x: u8| i32::from(x as i8))
    }

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

/// A unit query scored against int8 rows of other owners (the store's frames, read in place from
/// the database) with the matcher's int8 lanes: the query is quantized to i16 once
/// ([`query_max`]), each row is [`dot_i8`]'s integer multiply-adds (AVX2 where the CPU has it,
/// NEON's `smlal` on a Pi). No copy of the rows: batching them for the VNNI kernel cost more in
/// copies and row sums than it saved (benches/README.md, Issue 26).
#[derive(Debug, Clone)]
pub struct Int8Query {
    values: Vec<i16>,
    step: f32,
}

impl Int8Query {
    /// `query` (any finite vector; its scale is kept in the results) in i16.
    pub fn new(query: &[f32]) -> Int8Query {
        let max = query.iter().fold(0f32, |m, x| m.max(x.abs()));
        let step = if max > 0.0 && max.is_finite() {
            max / query_max(query.len())
        } else {
            1.0
        };
        let per_step = 1.0 / step;
        let values = query
            .iter()
            .map(|x| (x * per_step + 0.5f32.copysign(*x)) as i16)
            .collect();
        Int8Query { values, step }
    }

    /// The query's width.
    pub fn dim(&self) -> usize {
        self.values.len()
    }

    /// The cosine of a stored int8 row (its values as bytes, [`Int8Query::dim`] of them) and
    /// its `scale` with the query: exact integer multiply-adds, then one multiplication (within
    /// half a quantization step of each vector when both are unit vectors).
    pub fn score_bytes(&self, row: &[u8], scale: f32) -> f32 {
        dot_bytes_i8(row, &self.values) as f32 * scale * self.step
    }
}

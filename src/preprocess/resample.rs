//! Pillow's separable convolution resampler, to the bit: the fixed-point coefficients of each
//! axis ([`AxisPlan`], `precompute_coeffs` + `normalize_coeffs_8bpc` in Pillow's Resample.c), the
//! geometry of torchvision's `Resize` + `CenterCrop` ([`Plan`]), and both passes ([`resample`]):
//! horizontal into 8-bit rows, rounded and clamped, then vertical, as Pillow does them.
//! `tests/preprocess.rs` checks the bytes against Pillow itself.

use super::{Interpolation, ResizeMode, Spec, release_excess};

/// Filter taps for one output coordinate: `weights` apply to input `start..start + weights.len()`.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    start: usize,
    len: usize,
}

/// Fixed-point coefficients for one axis, for the output coordinates `first..first + count`.
#[derive(Debug, Clone, PartialEq)]
struct AxisPlan {
    taps: Vec<Taps>,
    /// `taps.len() * stride` coefficients; entry `i * stride + k` is tap `k` of output `i`.
    coeffs: Vec<i32>,
    stride: usize,
    /// False when input and output sizes match: Pillow copies that axis unchanged.
    resample: bool,
}

/// Pillow's coefficient precision for 8-bit images (`PRECISION_BITS` in Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    // Pillow's bicubic, a = -0.5.
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

impl AxisPlan {
    /// Coefficients for resizing `in_size` to `out_size`, keeping outputs `first..first+count`
    /// (`precompute_coeffs` + `normalize_coeffs_8bpc` in Pillow's Resample.c).
    fn new(
        in_size: usize,
        out_size: usize,
        first: usize,
        count: usize,
        filter: Interpolation,
    ) -> AxisPlan {
        if in_size == out_size {
            let taps = (first..first + count)
                .map(|x| Taps { start: x, len: 1 })
                .collect();
            return AxisPlan {
                taps,
                coeffs: vec![1 << PRECISION_BITS; count],
                stride: 1,
                resample: false,
            };
        }
        let (f, support): (fn(f64) -> f64, f64) = match filter {
            Interpolation::Bicubic => (bicubic, 2.0),
            Interpolation::Bilinear => (bilinear, 1.0),
        };
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let stride = support.ceil() as usize * 2 + 1;
        let mut taps = Vec::with_capacity(count);
        let mut coeffs = vec![0i32; count * stride];
        let mut k = vec![0f64; stride];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // Pillow truncates toward zero with a C cast; both values are >= -0.5 here.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = f((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, kx) in k.iter().enumerate().take(n) {
                let w = if ww != 0.0 { kx / ww } else { *kx };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                coeffs[i * stride + x] = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            taps.push(Taps {
                start: xmin,
                len: n,
            });
        }
        AxisPlan {
            taps,
            coeffs,
            stride,
            resample: true,
        }
    }

    /// The range of input coordinates the kept outputs read.
    fn input_range(&self) -> (usize, usize) {
        let lo = self.taps.iter().map(|t| t.start).min().unwrap_or(0);
        let hi = self.taps.iter().map(|t| t.start + t.len).max().unwrap_or(0);
        (lo, hi)
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The geometry of one (input size -> resized size -> crop) combination.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    pub(super) in_w: usize,
    pub(super) in_h: usize,
    horizontal: AxisPlan,
    vertical: AxisPlan,
    /// Input rows the vertical pass reads (`row_lo..row_hi`).
    row_lo: usize,
    row_hi: usize,
}

/// Resized size for torchvision's `Resize(size)` with an int size: the shortest side becomes
/// `size`, the other is scaled and truncated. For a non-square target the image is scaled to cover
/// it.
fn resized_size(in_w: u32, in_h: u32, out_w: u32, out_h: u32, mode: ResizeMode) -> (usize, usize) {
    match mode {
        ResizeMode::Stretch => (out_w as usize, out_h as usize),
        ResizeMode::Shortest if out_w == out_h => {
            let size = out_w as f64;
            if in_w <= in_h {
                (out_w as usize, (size * in_h as f64 / in_w as f64) as usize)
            } else {
                ((size * in_w as f64 / in_h as f64) as usize, out_h as usize)
            }
        }
        ResizeMode::Shortest => {
            let scale = (out_w as f64 / in_w as f64).max(out_h as f64 / in_h as f64);
            let w = ((in_w as f64 * scale).round() as usize).max(out_w as usize);
            let h = ((in_h as f64 * scale).round() as usize).max(out_h as usize);
            (w, h)
        }
    }
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2))`, Python's round (half to
/// even).
fn center_offset(size: usize, crop: usize) -> usize {
    let d = size - crop;
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

impl Plan {
    pub(super) fn new(in_w: usize, in_h: usize, spec: &Spec) -> Plan {
        let (rw, rh) = resized_size(
            in_w as u32,
            in_h as u32,
            spec.width,
            spec.height,
            spec.resize,
        );
        let (ow, oh) = (spec.width as usize, spec.height as usize);
        let left = center_offset(rw, ow);
        let top = center_offset(rh, oh);
        let horizontal = AxisPlan::new(in_w, rw, left, ow, spec.interpolation);
        let vertical = AxisPlan::new(in_h, rh, top, oh, spec.interpolation);
        let (row_lo, row_hi) = vertical.input_range();
        Plan {
            in_w,
            in_h,
            horizontal,
            vertical,
            row_lo,
            row_hi,
        }
    }
}

/// Both resampling passes over the cropped window: horizontal into `tmp`, vertical into `out`.
pub(super) fn resample(
    plan: &Plan,
    rgb: &[u8],
    in_w: usize,
    tmp: &mut Vec<u8>,
    out: &mut Vec<u8>,
    ow: usize,
    oh: usize,
) {
    let rows = plan.row_hi - plan.row_lo;
    release_excess(tmp, rows * ow * 3);
    tmp.resize(rows * ow * 3, 0);
    out.resize(oh * ow * 3, 0);
    let hp = &plan.horizontal;
    for r in 0..rows {
        let src = &rgb[(plan.row_lo + r) * in_w * 3..(plan.row_lo + r + 1) * in_w * 3];
        let dst = &mut tmp[r * ow * 3..(r + 1) * ow * 3];
        horizontal_rgb(hp, src, dst);
    }
    let vp = &plan.vertical;
    let half = 1i32 << (PRECISION_BITS - 1);
    let row_len = ow * 3;
    let mut acc = vec![0i32; 0];
    for (y, t) in vp.taps.iter().enumerate() {
        let dst = &mut out[y * row_len..(y + 1) * row_len];
        let first = t.start - plan.row_lo;
        if !vp.resample {
            dst.copy_from_slice(&tmp[first * row_len..(first + 1) * row_len]);
            continue;
        }
        // Accumulate whole rows at a time: contiguous and easy for the compiler to vectorise.
        if acc.len() != row_len {
            acc = vec![0i32; row_len];
        }
        acc.fill(half);
        let k = &vp.coeffs[y * vp.stride..y * vp.stride + t.len];
        for (j, &c) in k.iter().enumerate() {
            let src = &tmp[(first + j) * row_len..(first + j + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a += p as i32 * c;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

/// The horizontal pass over one packed RGB row, as Pillow writes it: for each output pixel, its
/// taps' sums in three accumulators, rounded and clamped to 8 bits.
fn horizontal_rgb(hp: &AxisPlan, src: &[u8], dst: &mut [u8]) {
    if !hp.resample {
        let start = hp.taps[0].start;
        dst.copy_from_slice(&src[start * 3..(start + dst.len() / 3) * 3]);
        return;
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    for (x, t) in hp.taps.iter().enumerate() {
        let k = &hp.coeffs[x * hp.stride..x * hp.stride + t.len];
        let px = &src[t.start * 3..(t.start + t.len) * 3];
        let (mut a0, mut a1, mut a2) = (half, half, half);
        for (c, p) in k.iter().zip(px.chunks_exact(3)) {
            a0 += p[0] as i32 * c;
            a1 += p[1] as i32 * c;
            a2 += p[2] as i32 * c;
        }
        dst[x * 3] = clip8(a0);
        dst[x * 3 + 1] = clip8(a1);
        dst[x * 3 + 2] = clip8(a2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_and_crop_geometry() {
        // 640x480 -> shortest side 224: int(224 * 640 / 480) = 298; crop offset round(37.0) = 37.
        assert_eq!(
            resized_size(640, 480, 224, 224, ResizeMode::Shortest),
            (298, 224)
        );
        assert_eq!(center_offset(298, 224), 37);
        // Python rounds half to even: (225-224)/2 = 0.5 -> 0, (227-224)/2 = 1.5 -> 2.
        assert_eq!(center_offset(225, 224), 0);
        assert_eq!(center_offset(227, 224), 2);
        assert_eq!(center_offset(229, 224), 2);
        // Portrait.
        assert_eq!(
            resized_size(480, 640, 224, 224, ResizeMode::Shortest),
            (224, 298)
        );
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (inp, out) in [(640, 298), (100, 224), (3000, 224), (7, 5)] {
            let p = AxisPlan::new(inp, out, 0, out, Interpolation::Bicubic);
            for (i, t) in p.taps.iter().enumerate() {
                let sum: i64 = p.coeffs[i * p.stride..i * p.stride + t.len]
                    .iter()
                    .map(|&c| c as i64)
                    .sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= t.len as i64,
                    "{inp}->{out} at {i}: {sum}"
                );
            }
        }
    }
}

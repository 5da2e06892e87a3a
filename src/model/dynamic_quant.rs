//! onnxruntime's dynamic int8 activations quantised in two vector passes, the same bytes as
//! tract's `DynamicQuantizeLinearU8`.
//!
//! A dynamic-int8 tower (`int8-dynamic`, onnxruntime's `quantize_dynamic`) quantises the input
//! of every integer matrix product at run time: `DynamicQuantizeLinear` takes the minimum and
//! the maximum of the whole tensor (each extended to include 0), derives a scale and a zero
//! point from them, and rounds every value to `u8`. tract-onnx 0.23.9 (`src/ops/quant.rs`,
//! `scale_and_zero_point` and `dynamic_quantize_linear_u8`) finds the minimum and maximum with an
//! ndarray `fold` of a two-branch closure and rounds each value with `round_ties_even` then a
//! saturating cast: scalar code, one value at a time. On ViT-B/32 that was 33.3 M of the 536.5 M
//! instructions of an inference on the emulated Cortex-A76 (`benches/README.md`, issue 28).
//!
//! [`DynamicQuantizeU8`] computes the same three outputs, bit for bit:
//!
//! - the minimum and maximum in 16 independent lanes, each started at 0, with `f32::min` and
//!   `max`, which skip NaN as the fold does (the order of the values does not matter to a
//!   minimum);
//! - the scale and the zero point with tract's own formulas;
//! - each value as `x / scale` (a division, as tract does: the reciprocal changes some
//!   roundings), rounded to the nearest integer, ties to even, by adding 1.5 * 2^23 and reading
//!   the integer off the float's bits, then the zero point added and the clamp to [0, 255]
//!   applied in integers. That rounding is exact for |x / scale| <= 2^22, which holds when the
//!   scale is a normal number and the minimum and maximum are finite (then |x / scale| is at
//!   most about 255). NaN gives the zero point, as tract's cast of NaN to 0 does.
//!
//! A tensor outside that case (an infinity in it, or a range so small or so large that the
//! scale is not a normal number) goes to tract's own operator, which the replacement keeps.
//! The min/max is plain Rust that the compiler vectorises; so is the quantising loop on x86-64,
//! and on aarch64 it is NEON intrinsics (the `neon` module).
//!
//! The replacement is made on the optimized CPU plan, and only while tract-core's edgeclip
//! patches are on (`TRACT_EDGECLIP_PATCHES_OFF=1` turns it off with them, so one binary measures
//! before and after: `benches/catch-ort.sh`). Drop it when tract-onnx's own
//! `DynamicQuantizeLinearU8` vectorises: re-test by profiling ViT-B/32 int8-dynamic on the A76
//! (`benches/arm-profile.sh`) with the knob on and off.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// The name tract-onnx gives its operator (the type itself is private to tract-onnx).
const TRACT_OP: &str = "DynamicQuantizeLinearU8";

/// Replaces every `DynamicQuantizeLinearU8` node of `model` with [`DynamicQuantizeU8`], which
/// keeps the original for the cases it hands back. Returns how many, 0 when tract-core's
/// edgeclip patches are off.
pub(super) fn replace_dynamic_quantizers(model: &mut TypedModel) -> usize {
    if !tract_onnx::tract_core::edgeclip_patches::on() {
        return 0;
    }
    let mut replaced = 0;
    for node in model.nodes_mut() {
        if node.op.name() == TRACT_OP && node.inputs.len() == 1 && node.outputs.len() == 3 {
            let tract = node.op.clone();
            node.op = Box::new(DynamicQuantizeU8 { tract });
            replaced += 1;
        }
    }
    replaced
}

/// `DynamicQuantizeLinear` to `u8` (see the module documentation), with tract's operator kept
/// for the tensors the fast path does not take.
#[derive(Debug, Clone)]
pub(super) struct DynamicQuantizeU8 {
    tract: Box<dyn TypedOp>,
}

impl PartialEq for DynamicQuantizeU8 {
    /// tract's operator has no parameters, so any two are the same operator.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for DynamicQuantizeU8 {}

impl Op for DynamicQuantizeU8 {
    fn name(&self) -> StaticName {
        "DynamicQuantizeLinearU8 (edgeclip)".into()
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantizeU8 {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // A tensor not in plain memory, or not f32, goes to tract's operator too.
        let fast = match inputs[0]
            .try_as_plain_ram()
            .and_then(|plain| plain.as_slice::<f32>())
        {
            Ok(xs) => quantize(xs, inputs[0].shape())?,
            Err(_) => None,
        };
        match fast {
            Some((codes, scale, zero_point)) => Ok(tvec!(
                codes.into_tvalue(),
                tensor0(scale).into_tvalue(),
                tensor0(zero_point).into_tvalue()
            )),
            None => self.tract.eval(ctx, inputs),
        }
    }
}

impl TypedOp for DynamicQuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}

/// The codes, the scale and the zero point of `xs` (of shape `shape`), or `None` when the scale
/// is not a normal number or the range is not finite (tract's operator then runs).
fn quantize(xs: &[f32], shape: &[usize]) -> TractResult<Option<(Tensor, f32, u8)>> {
    let (min, max) = min_max(xs);
    let Some((scale, zero_point)) = scale_and_zero_point(min, max) else {
        return Ok(None);
    };
    let mut codes = vec![0u8; xs.len()];
    quantize_into(xs, scale, zero_point, &mut codes);
    let codes = tract_ndarray::ArrayD::from_shape_vec(shape, codes)?.into_tensor();
    Ok(Some((codes, scale, zero_point)))
}

/// The minimum and maximum of `xs` and 0, in 16 lanes started at 0. `f32::min` and `max`
/// skip NaN, as tract's fold does (`v < min` and `v > max` are false for NaN). They may take
/// -0.0 as the minimum where the fold keeps +0.0 (when nothing is negative); the scale
/// (`max - min`) and the zero point (0) come out the same either way.
fn min_max(xs: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for lane in 0..LANES {
            lo[lane] = lo[lane].min(chunk[lane]);
            hi[lane] = hi[lane].max(chunk[lane]);
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &v in lo.iter().chain(hi.iter()).chain(chunks.remainder()) {
        min = min.min(v);
        max = max.max(v);
    }
    (min, max)
}

/// tract-onnx's `scale_and_zero_point` once the range is known, or `None` when the scale is not
/// a normal number or the range is not finite (the cases the fast rounding does not cover).
fn scale_and_zero_point(min: f32, max: f32) -> Option<(f32, u8)> {
    let scale = (max - min) / u8::MAX as f32;
    if !(scale.is_normal() && min.is_finite() && max.is_finite()) {
        return None;
    }
    let zero_point = (-min / scale)
        .round_ties_even()
        .max(u8::MIN as f32)
        .min(u8::MAX as f32);
    Some((scale, zero_point as u8))
}

/// `ys[i] = clamp(round_ties_even(xs[i] / scale) + zero_point, 0, 255)`, NaN giving the zero
/// point. Exact when |xs[i] / scale| <= 2^22, which [`scale_and_zero_point`]'s conditions ensure.
///
/// `v + MAGIC` (1.5 * 2^23, even) lies in [2^23, 2^24), whose spacing is 1, for |v| <= 2^22: the
/// addition rounds `v` to an integer, ties to even, and that integer plus `MAGIC` is the float's
/// bit pattern less `MAGIC`'s. So the rounded value is a difference of bit patterns, and the
/// zero point and the clamp are integer operations: the compiler vectorises the whole loop on
/// x86-64 (SSE2 has no saturating float-to-int conversion, so a float clamp and `as u8` would
/// not) and on Arm. NaN is replaced by 0 before rounding, as tract's cast of NaN to 0 does.
fn quantize_into(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let offset = zero_point as i32 - MAGIC.to_bits() as i32;
    #[cfg(target_arch = "aarch64")]
    let done = neon::quantize_into(xs, scale, offset, ys);
    #[cfg(not(target_arch = "aarch64"))]
    let done = 0;
    for (x, y) in xs[done..].iter().zip(&mut ys[done..]) {
        let v = x / scale;
        let v = if v.is_nan() { 0.0 } else { v };
        *y = ((v + MAGIC).to_bits() as i32 + offset).clamp(0, 255) as u8;
    }
}

/// 1.5 * 2^23: see [`quantize_into`].
const MAGIC: f32 = 12_582_912.0;

/// [`quantize_into`] on aarch64, 16 values at a time: the same arithmetic, with the clamp done
/// by the saturating narrows (`SQXTUN` from i32 to u16, then `UQXTN` to u8) instead of the
/// minimum, maximum and plain narrows the compiler emits for the portable loop (ViT-B/32 on the
/// A76: the operator 13.4 -> 9.3 M instructions). Returns how many values it quantised (the
/// whole chunks of 16).
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::MAGIC;
    use std::arch::aarch64::*;

    pub(super) fn quantize_into(xs: &[f32], scale: f32, offset: i32, ys: &mut [u8]) -> usize {
        let (xs, _) = xs.as_chunks::<16>();
        let (ys, _) = ys.as_chunks_mut::<16>();
        // SAFETY: NEON is part of the aarch64 baseline. Each load reads four of the 16 floats
        // of `x`, and the store writes the 16 bytes of `y`.
        #[allow(unsafe_code)]
        unsafe {
            let (scale, magic, offset) =
                (vdupq_n_f32(scale), vdupq_n_f32(MAGIC), vdupq_n_s32(offset));
            let codes = |x: *const f32| {
                let v = vdivq_f32(vld1q_f32(x), scale);
                // v + MAGIC, or MAGIC itself (the code of 0) where v is NaN.
                let rounded = vbslq_f32(vceqq_f32(v, v), vaddq_f32(v, magic), magic);
                vaddq_s32(vreinterpretq_s32_f32(rounded), offset)
            };
            for (x, y) in xs.iter().zip(ys.iter_mut()) {
                let x = x.as_ptr();
                let low = vqmovun_high_s32(vqmovun_s32(codes(x)), codes(x.add(4)));
                let high = vqmovun_high_s32(vqmovun_s32(codes(x.add(8))), codes(x.add(12)));
                vst1q_u8(y.as_mut_ptr(), vqmovn_high_u16(vqmovn_u16(low), high));
            }
        }
        xs.len().min(ys.len()) * 16
    }
}

#[cfg(test)]
mod tests;

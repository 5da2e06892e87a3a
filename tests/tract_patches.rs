//! The patches edgeclip carries on tract-core (`vendor/tract-core`, `vendor/README.md`), checked
//! against plain reference arithmetic written here, on random geometries (proptest).
//!
//! - A float convolution with 6 or more kernel taps runs through tract's lazy im2col, which
//!   tract feeds through a constant `Pad` when the convolution is padded (the `Pad` is patched);
//!   one with fewer taps through the eager im2col (`rows_2d`, k-outer panels) when its output
//!   channels span several row panels. Each case checks that the plan has one or the other
//!   (enough cases must take the eager one), then compares its output with a direct
//!   convolution computed in f64, over strides, paddings and dilations.
//! - A constant `Pad` is written row by row (`pad_constant_rows`, on x86-64; elsewhere this
//!   checks tract's own `Pad`): compared element for element with a padded copy built index by
//!   index, ranks 1 to 4.
//! - An integer convolution (the int8 towers' path) gathers its eager im2col by rows
//!   (`rows_2d`): its plan must have an `Im2col` node, and its i32 output must equal, exactly,
//!   a direct integer convolution, with a random zero point (the value padding reads). Inputs
//!   up to 71 wide reach all of the byte paths: the short copies at stride 1 (up to 64 bytes),
//!   the vector gathers at stride 2 (16 or 8 at a time, and the last vector overlapping the
//!   one before), and the K=4-inner interleave of whole 8-column panels.
//! - The K=4-inner int8 packing of a matrix product's input whose k axis is contiguous
//!   (`pack_i8k4_k_contiguous`, the dynamic-int8 towers' activations) gives the same bytes as
//!   tract-linalg's own `PackedI8K4::pack_view`, on random shapes, panel widths and row strides.
//! - `QuantizeLinearU8` / `I8` round without branches (`quantize_branch_free`): compared with
//!   Rust's own `round_ties_even`, on ties, the clamp edges, infinities and NaN.
//!
//! The bit-for-bit check of the patches against tract's own code on real towers (the demo, ViT-B/32)
//! is `benches/catch-ort.sh`: the patches are process-wide (`TRACT_EDGECLIP_PATCHES_OFF`), so
//! that comparison takes two processes.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::matmul::pack::{i8k4_read_slack, pack_i8k4_k_contiguous};
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::quant::{quantize_linear_i8, quantize_linear_u8};
use tract_onnx::tract_core::tract_linalg::mmm::{EagerPackedInput, MMMInputValue};
use tract_onnx::tract_core::tract_linalg::pack::PackedI8K4;

/// A convolution's geometry (NCHW, one image, one group).
#[derive(Debug, Clone)]
struct ConvCase {
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize, usize, usize),
    seed: u64,
}

impl ConvCase {
    fn out_dim(input: usize, kernel: usize, stride: usize, dilation: usize, pads: usize) -> usize {
        let span = dilation * (kernel - 1) + 1;
        (input + pads).saturating_sub(span) / stride + 1
    }

    fn out_hw(&self) -> (usize, usize) {
        (
            Self::out_dim(
                self.h,
                self.kernel.0,
                self.stride.0,
                self.dilation.0,
                self.pad.0 + self.pad.2,
            ),
            Self::out_dim(
                self.w,
                self.kernel.1,
                self.stride.1,
                self.dilation.1,
                self.pad.1 + self.pad.3,
            ),
        )
    }

    /// For each output value in NCHW order: its output channel and the (input index, kernel
    /// index) of each of its taps that falls inside the input (padding contributes nothing).
    fn output_taps(&self) -> Vec<(usize, Vec<(usize, usize)>)> {
        let (ho, wo) = self.out_hw();
        let (kh, kw) = self.kernel;
        let mut out = Vec::with_capacity(self.co * ho * wo);
        for o in 0..self.co {
            for y in 0..ho {
                for x in 0..wo {
                    let mut taps = vec![];
                    for i in 0..self.ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * self.stride.0 + ky * self.dilation.0) as isize
                                    - self.pad.0 as isize;
                                let ix = (x * self.stride.1 + kx * self.dilation.1) as isize
                                    - self.pad.1 as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= self.h as isize
                                    || ix >= self.w as isize
                                {
                                    continue;
                                }
                                let input = (i * self.h + iy as usize) * self.w + ix as usize;
                                taps.push((input, ((o * self.ci + i) * kh + ky) * kw + kx));
                            }
                        }
                    }
                    out.push((o, taps));
                }
            }
        }
        out
    }

    /// tract's convolution op for this geometry (OIHW kernel); `q_params` as in `Conv`.
    fn conv_op(&self, q_params: Option<DatumType>) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![self.kernel.0, self.kernel.1],
                padding: PaddingSpec::Explicit(
                    tvec![self.pad.0, self.pad.1],
                    tvec![self.pad.2, self.pad.3],
                ),
                dilations: Some(tvec![self.dilation.0, self.dilation.1]),
                strides: Some(tvec![self.stride.0, self.stride.1]),
                input_channels: self.ci,
                output_channels: self.co,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params,
        }
    }

    fn kernel_tensor<T: Datum + Copy>(&self, kernel: &[T]) -> TractResult<Tensor> {
        tensor1(kernel).into_shape(&[self.co, self.ci, self.kernel.0, self.kernel.1])
    }

    fn input_tensor<T: Datum + Copy>(&self, input: &[T]) -> TractResult<Tensor> {
        tensor1(input).into_shape(&[1, self.ci, self.h, self.w])
    }

    fn valid(&self) -> bool {
        let span_h = self.dilation.0 * (self.kernel.0 - 1) + 1;
        let span_w = self.dilation.1 * (self.kernel.1 - 1) + 1;
        self.h + self.pad.0 + self.pad.2 >= span_h && self.w + self.pad.1 + self.pad.3 >= span_w
    }
}

fn conv_cases() -> impl Strategy<Value = ConvCase> {
    (
        // Output channels up to 99: a small kernel goes to the eager im2col only when they span
        // more than one row panel of the matrix kernel tract prefers, and on an AVX-512 Intel
        // CPU that panel is up to 48 rows (up to 47 channels, 4 cases in 200 were eager there).
        (1usize..6, 1usize..100, 1usize..14, 1usize..72),
        // 6 taps or more: the lazy im2col for floats; fewer: the eager one (`rows_2d`).
        prop::sample::select(vec![
            (3usize, 3usize),
            (2, 3),
            (3, 2),
            (5, 5),
            (3, 5),
            (7, 1),
            (2, 2),
            (1, 3),
            (3, 1),
            (2, 1),
        ]),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        any::<u64>(),
    )
        .prop_map(
            |((ci, co, h, w), kernel, (sh, sw, dh, dw), pad, seed)| ConvCase {
                ci,
                co,
                h,
                w,
                kernel,
                stride: (sh, sw),
                dilation: (dh, dw),
                pad,
                seed,
            },
        )
        .prop_filter("the kernel must fit the padded input", ConvCase::valid)
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// The reference: a direct convolution, accumulated in f64.
fn direct_conv(c: &ConvCase, input: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<f32> {
    c.output_taps()
        .into_iter()
        .map(|(o, taps)| {
            let sum = taps.iter().fold(bias[o] as f64, |acc, &(i, k)| {
                acc + input[i] as f64 * kernel[k] as f64
            });
            sum as f32
        })
        .collect()
}

/// Runs `model` (its outputs `outputs`) on `input`, optimized or as built: the plan's op names
/// and its first output.
fn run_model(
    mut model: TypedModel,
    outputs: &[OutletId],
    input: Tensor,
    optimize: bool,
) -> TractResult<(Vec<String>, Tensor)> {
    model.select_output_outlets(outputs)?;
    let model = if optimize {
        model.into_optimized()?
    } else {
        model
    };
    let ops = model
        .nodes()
        .iter()
        .map(|n| n.op().name().to_string())
        .collect();
    let mut out = model.into_runnable()?.run(tvec![input.into()])?;
    Ok((ops, out.remove(0).into_tensor()))
}

/// A tensor's values, in order.
fn to_vec<T: Datum + Copy>(t: &Tensor) -> TractResult<Vec<T>> {
    Ok(t.to_plain_array_view::<T>()?.iter().copied().collect())
}

/// tract's optimized plan of the convolution, its op names, and its output on `input`.
fn tract_conv(
    c: &ConvCase,
    input: &[f32],
    kernel: &[f32],
    bias: &[f32],
) -> TractResult<(Vec<String>, Vec<f32>)> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([1, c.ci, c.h, c.w]))?;
    let k = model.add_const("kernel", c.kernel_tensor(kernel)?)?;
    let b = model.add_const("bias", tensor1(bias))?;
    let y = model.wire_node("conv", c.conv_op(None), &[x, k, b])?;
    let (ops, out) = run_model(model, &y, c.input_tensor(input)?, true)?;
    Ok((ops, to_vec(&out)?))
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn float_convolutions_match_a_direct_convolution() {
    let eager_cases = std::cell::Cell::new(0u32);
    runner(200)
        .run(&conv_cases(), |c| {
            let input = values(c.ci * c.h * c.w, c.seed);
            let kernel = values(c.co * c.ci * c.kernel.0 * c.kernel.1, c.seed ^ 0x9e37);
            let bias = values(c.co, c.seed ^ 0x51ed);
            let want = direct_conv(&c, &input, &kernel, &bias);
            let (ops, got) = tract_conv(&c, &input, &kernel, &bias).expect("tract runs the conv");
            // tract picks: 6 taps or more always lazy; fewer, eager when the output channels
            // span more than one row panel of the matrix kernel.
            let eager = ops.iter().any(|op| op == "Im2col");
            prop_assert!(
                eager || ops.iter().any(|op| op == "LazyIm2col"),
                "{:?}: the plan has no im2col: {:?}",
                c,
                ops
            );
            prop_assert!(
                !eager || c.kernel.0 * c.kernel.1 < 6,
                "{:?}: eager im2col",
                c
            );
            eager_cases.set(eager_cases.get() + u32::from(eager));
            prop_assert_eq!(got.len(), want.len(), "{:?}: output length", c);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                prop_assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{:?}: [{}] {} != {}",
                    c,
                    i,
                    g,
                    w
                );
            }
            Ok(())
        })
        .unwrap();
    // The eager im2col's k-outer panels (`rows_2d`) must have been exercised, not only the lazy.
    let eager = eager_cases.get();
    eprintln!("the eager im2col ran {eager} of 200 cases");
    assert!(
        eager >= 5,
        "only {eager} of 200 cases used the eager im2col"
    );
}

/// The integer reference: `sum (x - x0) * k` over the taps inside the input, exact.
fn direct_conv_u8(c: &ConvCase, input: &[u8], x0: u8, kernel: &[i8]) -> Vec<i32> {
    c.output_taps()
        .into_iter()
        .map(|(_, taps)| {
            taps.iter()
                .map(|&(i, k)| (input[i] as i32 - x0 as i32) * kernel[k] as i32)
                .sum()
        })
        .collect()
}

/// tract's optimized plan of an integer convolution (u8 input with zero point `x0`, i8 kernel,
/// unit scales, i32 accumulators out: tract's quantized convolution path, no requantisation),
/// its op names, and its output.
fn tract_conv_u8(
    c: &ConvCase,
    input: &[u8],
    x0: u8,
    kernel: &[i8],
) -> TractResult<(Vec<String>, Vec<i32>)> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", u8::fact([1, c.ci, c.h, c.w]))?;
    let k = model.add_const("kernel", c.kernel_tensor(kernel)?)?;
    let bias = model.add_const("bias", tensor1(&vec![0i32; c.co]))?;
    let x0 = model.add_const("x0", tensor0(x0 as i32))?;
    let k0 = model.add_const("k0", tensor0(0i32))?;
    let y0 = model.add_const("y0", tensor0(0i32))?;
    let one = model.add_const("one", tensor0(1f32))?;
    let conv = c.conv_op(Some(i32::datum_type()));
    let y = model.wire_node("conv", conv, &[x, k, bias, x0, one, k0, one, y0, one])?;
    let (ops, out) = run_model(model, &y, c.input_tensor(input)?, true)?;
    Ok((ops, to_vec(&out)?))
}

#[test]
fn integer_convolutions_match_a_direct_convolution_exactly() {
    runner(160)
        .run(&(conv_cases(), any::<u8>()), |(c, x0)| {
            let input: Vec<u8> = values(c.ci * c.h * c.w, c.seed)
                .iter()
                .map(|v| ((v + 1.0) * 127.5) as u8)
                .collect();
            let kernel: Vec<i8> = values(c.co * c.ci * c.kernel.0 * c.kernel.1, c.seed ^ 0x9e37)
                .iter()
                .map(|v| (v * 127.0) as i8)
                .collect();
            let want = direct_conv_u8(&c, &input, x0, &kernel);
            let (ops, got) = tract_conv_u8(&c, &input, x0, &kernel).expect("tract runs the conv");
            prop_assert!(
                ops.iter().any(|op| op == "Im2col"),
                "{:?}: the plan has no im2col: {:?}",
                c,
                ops
            );
            prop_assert_eq!(got, want, "{:?} x0 {}", c, x0);
            Ok(())
        })
        .unwrap();
}

/// A tensor's shape, the pads of each axis and the pad value.
fn pad_cases() -> impl Strategy<Value = (Vec<usize>, Vec<(usize, usize)>, f32)> {
    prop::collection::vec((1usize..7, 0usize..4, 0usize..4), 1..5).prop_flat_map(|axes| {
        let shape: Vec<usize> = axes.iter().map(|a| a.0).collect();
        let pads: Vec<(usize, usize)> = axes.iter().map(|a| (a.1, a.2)).collect();
        (Just(shape), Just(pads), -4f32..4.0)
    })
}

/// The reference: every output index maps back to an input index or to the pad value.
fn padded_by_index(
    input: &[f32],
    shape: &[usize],
    pads: &[(usize, usize)],
    value: f32,
) -> Vec<f32> {
    let out_shape: Vec<usize> = shape
        .iter()
        .zip(pads)
        .map(|(d, (a, b))| d + a + b)
        .collect();
    let len: usize = out_shape.iter().product();
    (0..len)
        .map(|flat| {
            let mut rest = flat;
            let mut src = 0;
            for axis in (0..shape.len()).rev() {
                let i = rest % out_shape[axis];
                rest /= out_shape[axis];
                let inner: usize = shape[axis + 1..].iter().product();
                match i.checked_sub(pads[axis].0).filter(|j| *j < shape[axis]) {
                    Some(j) => src += j * inner,
                    None => return value,
                }
            }
            input[src]
        })
        .collect()
}

/// tract's plan of one constant `Pad`, run on `input`.
fn tract_pad(
    input: &[f32],
    shape: &[usize],
    pads: &[(usize, usize)],
    value: f32,
) -> TractResult<Vec<f32>> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact(shape))?;
    let pad = Pad {
        pads: pads.to_vec(),
        mode: PadMode::Constant(rctensor0(value)),
    };
    let y = model.wire_node("pad", pad, &[x])?;
    let (_, out) = run_model(model, &y, tensor1(input).into_shape(shape)?, false)?;
    to_vec(&out)
}

#[test]
fn constant_pad_matches_a_copy_built_index_by_index() {
    runner(200)
        .run(&pad_cases(), |(shape, pads, value)| {
            let len: usize = shape.iter().product();
            let input = values(len, len as u64 * 7919 + pads.len() as u64);
            let got = tract_pad(&input, &shape, &pads, value).expect("tract runs the pad");
            let want = padded_by_index(&input, &shape, &pads, value);
            prop_assert_eq!(got, want, "shape {:?} pads {:?}", shape, pads);
            Ok(())
        })
        .unwrap();
}

/// Scaled values that exercise rounding: ties of both parities and signs, the clamp edges,
/// large values, infinities and NaN, then random ones.
fn quantize_inputs(seed: u64) -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        127.5,
        128.5,
        -128.5,
        -127.5,
        254.5,
        255.5,
        256.0,
        -129.0,
        1e9,
        -1e9,
        8388607.5,
        8388609.0,
        -8388609.0,
        3e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        0.49999997,
    ];
    xs.extend(values(4000, seed).iter().map(|v| v * 300.0));
    // Exact halves in the range that matters.
    xs.extend((-600..600).map(|i| i as f32 * 0.5));
    xs
}

fn tract_elementwise(
    op: tract_onnx::tract_core::ops::element_wise::ElementWiseOp,
    xs: &[f32],
) -> TractResult<Tensor> {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([xs.len()]))?;
    let y = model.wire_node("q", op, &[x])?;
    Ok(run_model(model, &y, tensor1(xs), false)?.1)
}

#[test]
fn quantize_linear_rounds_ties_to_even_and_clamps() {
    for (scale, zero_point) in [(1.0f32, 0u8), (0.37, 128), (10.782526, 0), (1.0, 255)] {
        let xs = quantize_inputs(scale.to_bits() as u64 ^ zero_point as u64);
        let got = tract_elementwise(quantize_linear_u8(scale, zero_point), &xs).unwrap();
        let got = got.to_plain_array_view::<u8>().unwrap();
        for (x, g) in xs.iter().zip(got.iter()) {
            let want = ((x * scale).round_ties_even() as i64)
                .saturating_add(zero_point as i64)
                .clamp(0, 255);
            assert_eq!(
                *g as i64, want,
                "u8: x {x} scale {scale} zero point {zero_point}"
            );
        }
    }
    for (scale, zero_point) in [(1.0f32, 0i8), (0.37, -20), (3.3, 127), (1.0, -128)] {
        let xs = quantize_inputs(scale.to_bits() as u64 ^ zero_point as u64);
        let got = tract_elementwise(quantize_linear_i8(scale, zero_point), &xs).unwrap();
        let got = got.to_plain_array_view::<i8>().unwrap();
        for (x, g) in xs.iter().zip(got.iter()) {
            let want = ((x * scale).round_ties_even() as i64)
                .saturating_add(zero_point as i64)
                .clamp(-128, 127);
            assert_eq!(
                *g as i64, want,
                "i8: x {x} scale {scale} zero point {zero_point}"
            );
        }
    }
}

/// The packed bytes and geometry of a packed matrix-product input (an `EagerPackedInput`).
fn packed_bytes(value: &dyn MMMInputValue) -> (Vec<u8>, usize, usize, usize) {
    let eager = value
        .downcast_ref::<EagerPackedInput>()
        .expect("an eagerly packed input");
    (
        eager.packed.as_bytes().to_vec(),
        eager.panel_bytes,
        eager.mn,
        eager.fact.k,
    )
}

/// `[mn, batch, k]` bytes, k contiguous and each row `batch * k` apart: the view of batch `b`
/// packed by the patch and by tract-linalg's `pack_view` must be the same bytes, whatever the
/// panel width `r` and however k and mn fall on the panels (k not a multiple of 4, a last panel
/// narrower than `r`).
fn check_i8k4_packing(
    k: usize,
    mn: usize,
    batch: usize,
    b: usize,
    r: usize,
    signed: bool,
) -> Result<(), TestCaseError> {
    let bytes: Vec<u8> = values(mn * batch * k, (k * 1000 + mn * 10 + r) as u64)
        .iter()
        .map(|v| (v * 127.0) as i8 as u8)
        .collect();
    let tensor = Tensor::from_shape(&[mn, batch, k], &bytes).unwrap();
    let tensor = if signed {
        tensor.cast_to_dt(i8::datum_type()).unwrap().into_owned()
    } else {
        tensor
    };
    let view =
        tract_onnx::tract_core::internal::TensorView::offsetting(&tensor, &[0, b, 0]).unwrap();
    let format = PackedI8K4::new(r);
    let want = format.pack_view(&view, 2, 0).unwrap();
    let got = pack_i8k4_k_contiguous(&format, &view, 2, 0).expect("k is contiguous");
    let (mut got, want) = (packed_bytes(&*got), packed_bytes(&*want));
    // Past the panels: the bytes the AMX kernels may read (x86-64), zeros.
    let slack = got.0.split_off(want.0.len());
    prop_assert_eq!(slack.len(), i8k4_read_slack(k, r));
    prop_assert!(slack.iter().all(|&b| b == 0));
    prop_assert_eq!(got, want);
    Ok(())
}

#[test]
fn int8_packing_of_contiguous_rows_matches_pack_view() {
    runner(200)
        .run(
            &(
                1usize..80,
                1usize..40,
                1usize..3,
                prop::sample::select(vec![1usize, 4, 8, 16]),
            )
                .prop_flat_map(|(k, mn, batch, r)| {
                    (
                        Just(k),
                        Just(mn),
                        Just(batch),
                        0..batch,
                        Just(r),
                        any::<bool>(),
                    )
                }),
            |(k, mn, batch, b, r, signed)| check_i8k4_packing(k, mn, batch, b, r, signed),
        )
        .unwrap();
    // A view whose k axis is not contiguous is left to `pack_view`.
    let tensor = Tensor::from_shape(&[6, 5], &[0u8; 30]).unwrap();
    assert!(pack_i8k4_k_contiguous(&PackedI8K4::new(8), &tensor.view(), 0, 1).is_none());
}

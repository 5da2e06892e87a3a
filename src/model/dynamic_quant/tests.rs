//! [`DynamicQuantizeU8`] against tract-onnx's own `DynamicQuantizeLinearU8`, the operator it
//! replaces: one ONNX `DynamicQuantizeLinear` node, loaded by tract-onnx, run as loaded and with
//! the replacement, on random tensors (proptest) and on the edge cases (ties, NaN, infinities,
//! signed zeros, tiny and huge ranges). All three outputs must be equal, to the bit.

use super::*;
use crate::model::test_graphs::{model, node, value_info};
use proptest::prelude::*;

/// One `DynamicQuantizeLinear` of an `[n]` float input, optimized as the CPU plans are: as
/// loaded, and with [`replace_dynamic_quantizers`] applied.
fn plans(n: usize) -> (Arc<TypedRunnableModel>, Arc<TypedRunnableModel>) {
    let mut proto = model(
        vec![node(
            "DynamicQuantizeLinear",
            &["x"],
            &["y", "y_scale", "y_zero_point"],
        )],
        vec![],
        value_info("x", 1, &[n as i64]),
        value_info("y", 2, &[n as i64]),
    );
    let graph = proto.graph.as_mut().unwrap();
    graph.output.push(value_info("y_scale", 1, &[]));
    graph.output.push(value_info("y_zero_point", 2, &[]));
    let typed = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .unwrap()
        .into_optimized()
        .unwrap();
    let mut replaced = typed.clone();
    assert_eq!(replace_dynamic_quantizers(&mut replaced), 1);
    assert!(
        replaced
            .nodes()
            .iter()
            .any(|n| n.op_is::<DynamicQuantizeU8>())
    );
    (
        typed.into_runnable().unwrap(),
        replaced.into_runnable().unwrap(),
    )
}

/// The three outputs as bytes: the codes, the scale's bits, the zero point.
fn run(plan: &Arc<TypedRunnableModel>, xs: &[f32]) -> (Vec<u8>, u32, u8) {
    let out = plan
        .run(tvec!(Tensor::from_shape(&[xs.len()], xs).unwrap().into()))
        .unwrap();
    let codes: Vec<u8> = out[0]
        .to_plain_array_view::<u8>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    let scale = out[1].to_plain_array_view::<f32>().unwrap()[[]];
    let zero_point = out[2].to_plain_array_view::<u8>().unwrap()[[]];
    (codes, scale.to_bits(), zero_point)
}

fn check_same(xs: &[f32]) {
    let (tract, edgeclip) = plans(xs.len());
    assert_eq!(run(&tract, xs), run(&edgeclip, xs), "input {xs:?}");
}

/// ONNX's own examples (the operator's documentation), whose expected codes tract-onnx's tests
/// also use.
#[test]
fn onnx_examples_give_the_documented_codes() {
    let cases: [(&[f32], &[u8], u8); 3] = [
        (
            &[0., 2., -3., -2.5, 1.34, 0.5],
            &[153, 255, 0, 26, 221, 179],
            153,
        ),
        (
            &[-1., -2.1, -1.3, -2.5, -3.34, -4.],
            &[191, 121, 172, 96, 42, 0],
            255,
        ),
        (
            &[1., 2.1, 1.3, 2.5, 3.34, 4., 1.5, 2.6, 3.9, 4., 3., 2.345],
            &[64, 134, 83, 159, 213, 255, 96, 166, 249, 255, 191, 149],
            0,
        ),
    ];
    for (xs, codes, zero_point) in cases {
        let (tract, edgeclip) = plans(xs.len());
        let got = run(&edgeclip, xs);
        assert_eq!(
            (got.0.as_slice(), got.2),
            (codes, zero_point),
            "input {xs:?}"
        );
        assert_eq!(run(&tract, xs), got, "input {xs:?}");
    }
}

/// Ties round to even (in the codes and in the zero point), NaN gives the zero point, signed
/// zeros, values at the clamp, and the ranges the fast path hands back to tract: infinities, a
/// range whose scale underflows to a subnormal, one whose width overflows.
#[test]
fn edge_cases_match_tract() {
    let cases: Vec<Vec<f32>> = vec![
        vec![-127., 128., 0.5],
        vec![-253., 257.],
        vec![-127., 128., 0.5, 1.5, 2.5, -0.5, -1.5, f32::NAN],
        vec![0.0, -0.0, 0.0, -0.0],
        vec![-0.0; 40],
        vec![0.0; 17],
        vec![f32::NAN; 20],
        vec![1.0, f32::NAN, -1.0, 3.0, -0.0],
        vec![-0.0, 2.5, 1.0, 0.0],
        vec![-0.0, -1.5, 0.0],
        vec![f32::INFINITY, 1.0, -2.0],
        vec![f32::NEG_INFINITY, 1.0, 2.0],
        vec![f32::INFINITY, f32::NEG_INFINITY, 0.0],
        vec![3.0e38, -3.0e38, 1.0],
        vec![1.0e-38, -2.0e-38, 5.0e-39],
        vec![f32::MAX, 0.0, 1.0],
        vec![f32::MIN_POSITIVE, -f32::MIN_POSITIVE],
    ];
    for xs in cases {
        check_same(&xs);
    }
}

/// Whether the fast path takes ordinary tensors and hands back the ranges it does not cover.
#[test]
fn the_fast_path_takes_finite_ranges_only() {
    assert!(quantize(&[0.5, -1.0, 3.0], &[3]).unwrap().is_some());
    assert!(quantize(&[f32::NAN, 1.0], &[2]).unwrap().is_some());
    assert!(quantize(&[0.0; 4], &[4]).unwrap().is_none(), "a zero scale");
    assert!(quantize(&[f32::INFINITY, 1.0], &[2]).unwrap().is_none());
    assert!(quantize(&[3.0e38, -3.0e38], &[2]).unwrap().is_none());
    assert!(quantize(&[1.0e-38, -1.0e-38], &[2]).unwrap().is_none());
}

/// A value drawn from a mix: mostly ordinary activations of one magnitude, some of another, and
/// now and then a special value.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.0f32..1.0,
        2 => -1000.0f32..1000.0,
        1 => prop::sample::select(vec![0.0f32, -0.0, f32::NAN, 0.5, -0.5, 1.5, 2.5]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random tensors from 1 to 300 values (below, at and beyond the 16 lanes), scaled by a
    /// power of two from 2^-40 to 2^40, equal to tract's output to the bit.
    #[test]
    fn random_tensors_match_tract(
        xs in prop::collection::vec(value(), 1..300),
        exponent in -40i32..40,
    ) {
        let scaled: Vec<f32> = xs.iter().map(|x| x * 2f32.powi(exponent)).collect();
        let (tract, edgeclip) = plans(scaled.len());
        prop_assert_eq!(run(&tract, &scaled), run(&edgeclip, &scaled));
    }
}

//! The rewrite's tests: which chains of the demo's int8 tower it fuses and which it leaves, and
//! that a fused convolution gives the float chain's output codes, to one code.

use super::*;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, ValueInfoProto, attribute_proto::AttributeType,
};
use tract_onnx::prelude::*;

use crate::model::test_graphs::{model, node, value_info};

fn demo_int8() -> ModelProto {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/visual.onnx");
    tract_onnx::onnx().proto_model_for_path(path).unwrap()
}

fn ops(graph: &GraphProto, op: &str) -> Vec<String> {
    graph
        .node
        .iter()
        .filter(|n| n.op_type == op)
        .map(|n| n.name.clone())
        .collect()
}

/// The demo's int8-static tower has 11 ConvInteger: the 8 whose chain ends in a QuantizeLinear
/// are fused (their Relu with them); the colour branch's last convolution and the gate feed
/// float ops, and the last feature convolution a ReduceMean, so those 3 stay.
#[test]
fn fuses_the_demo_convolutions_that_end_in_a_quantization() {
    let mut model = demo_int8();
    let graph = model.graph.as_mut().unwrap();
    assert_eq!(ops(graph, "ConvInteger").len(), 11);
    assert_eq!(ops(graph, "Relu").len(), 10);
    assert_eq!(fuse_integer_convs(graph), 8);
    assert_eq!(ops(graph, "QLinearConv").len(), 8);
    assert_eq!(
        ops(graph, "ConvInteger"),
        [
            "/colour_net/colour_net.5/Conv_quant",
            "/gate/Conv_quant",
            "/features.12/Conv_quant"
        ]
    );
    assert_eq!(ops(graph, "Relu").len(), 2);
    // A second pass finds nothing more.
    assert_eq!(fuse_integer_convs(graph), 0);
}

/// The demo tower's embedding through tract, with and without the rewrite, for one fixed image.
fn demo_embedding(fuse: bool) -> Vec<f32> {
    let mut proto = demo_int8();
    if fuse {
        fuse_integer_convs(proto.graph.as_mut().unwrap());
    }
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(&proto)
        .unwrap();
    model
        .set_input_fact(0, f32::fact([1, 3, 128, 128]).into())
        .unwrap();
    let plan = model.into_optimized().unwrap().into_runnable().unwrap();
    let pixels: Vec<f32> = (0..3 * 128 * 128)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let input = Tensor::from_shape(&[1, 3, 128, 128], &pixels).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Through the whole tower the fused file stays within cosine 0.9999 of the file as written
/// (8 convolutions, each within one output code; `tests/runtime.rs` checks it against
/// onnxruntime).
#[test]
fn the_fused_demo_tower_stays_with_the_written_one() {
    let (a, b) = (demo_embedding(false), demo_embedding(true));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = dot / (norm(&a) * norm(&b));
    eprintln!("cosine(fused, as written) = {cos:.7}");
    assert!(cos >= 0.9999, "cosine {cos}");
    assert_ne!(a, b, "the rewrite did not change the plan");
}

/// A chain that does not match exactly is left as written: an intermediate result that is also
/// a graph output or read inside a subgraph, a Relu before a zero point other than u8's 0, a
/// weight scale per channel.
#[test]
fn leaves_chains_that_do_not_match() {
    let conv = "/features.4/Conv_quant";
    let chain = |model: &ModelProto| -> Vec<NodeProto> {
        // The convolution and the nodes down to its QuantizeLinear.
        let graph = model.graph.as_ref().unwrap();
        let mut out = vec![graph.node.iter().find(|n| n.name == conv).unwrap().clone()];
        while out.last().unwrap().op_type != "QuantizeLinear" {
            let o = out.last().unwrap().output[0].clone();
            out.push(
                graph
                    .node
                    .iter()
                    .find(|n| n.input.contains(&o))
                    .unwrap()
                    .clone(),
            );
        }
        out
    };
    let pristine = demo_int8();
    let nodes = chain(&pristine);
    assert_eq!(
        nodes.iter().map(|n| n.op_type.as_str()).collect::<Vec<_>>(),
        [
            "ConvInteger",
            "Cast",
            "Mul",
            "Add",
            "Relu",
            "QuantizeLinear"
        ]
    );
    let relu_out = nodes[4].output[0].clone();
    let zy = nodes[5].input[2].clone();
    let scale_mul = nodes[2].input[1].clone();

    let mut exposed = pristine.clone();
    exposed.graph.as_mut().unwrap().output.push(ValueInfoProto {
        name: relu_out.clone(),
        ..ValueInfoProto::default()
    });
    let mut in_subgraph = pristine.clone();
    in_subgraph.graph.as_mut().unwrap().node.push(NodeProto {
        op_type: "If".into(),
        attribute: vec![AttributeProto {
            name: "then_branch".into(),
            r#type: AttributeType::Graph as i32,
            g: Some(GraphProto {
                node: vec![node("Identity", &[&relu_out], &["seen"])],
                ..GraphProto::default()
            }),
            ..AttributeProto::default()
        }],
        ..NodeProto::default()
    });
    let mut shifted = pristine.clone();
    let t = shifted
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name == zy)
        .unwrap();
    t.raw_data = vec![3];
    t.int32_data = vec![3];
    let mut per_channel = pristine.clone();
    let graph = per_channel.graph.as_mut().unwrap();
    let sw = {
        let mul = graph
            .node
            .iter()
            .find(|n| n.output[0] == scale_mul)
            .unwrap();
        mul.input[1].clone()
    };
    let t = graph.initializer.iter_mut().find(|t| t.name == sw).unwrap();
    let v = tensor_values(t, DataType::Float).unwrap()[0] as f32;
    t.raw_data = [v, v].iter().flat_map(|x| x.to_le_bytes()).collect();
    t.float_data.clear();
    t.dims = vec![2];

    for (what, mut model) in [
        ("Relu output read by the graph", exposed),
        ("Relu output read inside an If's branch", in_subgraph),
        ("zero point 3 after a Relu", shifted),
        ("weight scale per channel", per_channel),
    ] {
        let graph = model.graph.as_mut().unwrap();
        assert_eq!(fuse_integer_convs(graph), 7, "{what}");
        assert!(
            ops(graph, "ConvInteger").contains(&conv.to_string()),
            "{what}"
        );
    }
}

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.to_vec(),
        ..TensorProto::default()
    }
}

fn byte_tensor(name: &str, dt: DataType, dims: &[i64], values: &[i32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        int32_data: values.to_vec(),
        ..TensorProto::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

/// One convolution written as onnxruntime's chain, `[1, 5, 9, 9]` in, `[1, 7, ., .]` out,
/// u8 codes. A small deterministic generator gives the weights, bias and scales.
fn one_conv(seed: u64, stride: i64, pad: i64, relu: bool, bias: bool) -> ModelProto {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let (cin, cout, k) = (5i64, 7i64, 3i64);
    let weights: Vec<i32> = (0..cout * cin * k * k)
        .map(|_| (next() * 254.0 - 127.0).round() as i32)
        .collect();
    let biases: Vec<f32> = (0..cout).map(|_| next() * 4.0 - 2.0).collect();
    let mut init = vec![
        float_tensor("sx", &[], &[0.02 + next() * 0.01]),
        byte_tensor("zx", DataType::Uint8, &[], &[100 + (next() * 50.0) as i32]),
        byte_tensor("w", DataType::Int8, &[cout, cin, k, k], &weights),
        byte_tensor("zw", DataType::Int8, &[], &[0]),
        float_tensor("sw", &[], &[0.003 + next() * 0.002]),
        float_tensor("b", &[cout], &biases),
        byte_tensor("shape", DataType::Int64, &[4], &[]),
        float_tensor("sy", &[], &[0.05 + next() * 0.05]),
        byte_tensor("zy", DataType::Uint8, &[], &[if relu { 0 } else { 90 }]),
    ];
    // As onnxruntime writes it.
    init[6].int64_data = vec![1, -1, 1, 1];
    let mut conv = node("ConvInteger", &["xq", "w", "zx", "zw"], &["acc"]);
    conv.attribute = vec![
        ints("kernel_shape", &[k, k]),
        ints("strides", &[stride, stride]),
        ints("pads", &[pad, pad, pad, pad]),
    ];
    let mut cast = node("Cast", &["acc"], &["accf"]);
    cast.attribute = vec![AttributeProto {
        name: "to".into(),
        r#type: AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..AttributeProto::default()
    }];
    let mut nodes = vec![
        node("QuantizeLinear", &["x", "sx", "zx"], &["xq"]),
        conv,
        cast,
        node("Mul", &["sx", "sw"], &["s"]),
        node("Mul", &["accf", "s"], &["scaled"]),
    ];
    let mut last = "scaled";
    if bias {
        nodes.push(node("Reshape", &["b", "shape"], &["b4"]));
        nodes.push(node("Add", &["scaled", "b4"], &["biased"]));
        last = "biased";
    }
    if relu {
        nodes.push(node("Relu", &[last], &["relu"]));
        last = "relu";
    }
    nodes.push(node("QuantizeLinear", &[last, "sy", "zy"], &["y"]));
    model(
        nodes,
        init,
        value_info("x", DataType::Float as i32, &[1, cin, 9, 9]),
        ValueInfoProto {
            name: "y".into(),
            ..ValueInfoProto::default()
        },
    )
}

fn run_codes(model: &ModelProto, x: &Tensor) -> Vec<u8> {
    let plan = tract_onnx::onnx()
        .model_for_proto_model(model)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan.run(tvec!(x.clone().into())).unwrap();
    out[0]
        .cast_to::<u8>()
        .unwrap()
        .to_plain_array_view::<u8>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// One convolution fused against its chain as written, through tract, over strides, paddings,
/// with and without Relu and bias: every output code within one of the chain's, and at least
/// 95% equal (a code differs only where the float result lies within rounding of a half).
#[test]
fn a_fused_convolution_gives_the_chains_codes_to_one() {
    let mut cases = 0;
    for seed in 0..4u64 {
        for (stride, pad) in [(1, 1), (2, 1), (1, 0), (2, 0)] {
            for (relu, bias) in [(true, true), (false, true), (true, false), (false, false)] {
                let written = one_conv(seed, stride, pad, relu, bias);
                let mut fused = written.clone();
                assert_eq!(fuse_integer_convs(fused.graph.as_mut().unwrap()), 1);
                let pixels: Vec<f32> = (0..5 * 9 * 9)
                    .map(|i| ((i as u64 * 7919 + seed * 31) % 251) as f32 / 40.0 - 3.0)
                    .collect();
                let x = Tensor::from_shape(&[1, 5, 9, 9], &pixels).unwrap();
                let (a, b) = (run_codes(&written, &x), run_codes(&fused, &x));
                assert_eq!(a.len(), b.len());
                let off = a.iter().zip(&b).filter(|(p, q)| p != q).count();
                let worst = a
                    .iter()
                    .zip(&b)
                    .map(|(&p, &q)| p.abs_diff(q))
                    .max()
                    .unwrap();
                let what = format!("seed {seed} stride {stride} pad {pad} relu {relu} bias {bias}");
                assert!(worst <= 1, "{what}: a code differs by {worst}");
                assert!(
                    off * 20 <= a.len(),
                    "{what}: {off} of {} codes differ",
                    a.len()
                );
                // Not a constant output: the test would pass on anything.
                assert!(a.iter().any(|&c| c != a[0]), "{what}: constant output");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 64);
}

/// Random damage to the demo's int8 tower (nodes losing inputs or outputs, inputs renamed,
/// nodes turned into the operators the matcher follows) never makes the rewrite panic, and it
/// only ever removes nodes. Cases: `EDGECLIP_FUZZ_CASES` (64).
#[test]
fn damaged_graphs_do_not_make_the_rewrite_panic() {
    use proptest::prelude::*;
    let pristine = demo_int8();
    let nodes = pristine.graph.as_ref().unwrap().node.len();
    let cases = std::env::var("EDGECLIP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let ops = [
        "ConvInteger",
        "Cast",
        "Mul",
        "Add",
        "Relu",
        "QuantizeLinear",
        "Reshape",
    ];
    let damage = prop::collection::vec((0..nodes, 0..4u8, 0..ops.len()), 1..6);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let (fused_some, fused_fewer) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&damage, |damage| {
            let mut graph = pristine.graph.clone().unwrap();
            for (ix, how, op) in damage {
                let n = &mut graph.node[ix];
                match how {
                    0 => n.input.clear(),
                    1 => n.output.clear(),
                    2 => n.input.push("nowhere".into()),
                    _ => n.op_type = ops[op].into(),
                }
            }
            let before = graph.node.len();
            let fused = fuse_integer_convs(&mut graph);
            prop_assert!(fused <= 11);
            prop_assert!(graph.node.len() <= before);
            if fused > 0 {
                fused_some.set(fused_some.get() + 1);
            }
            if fused < 8 {
                fused_fewer.set(fused_fewer.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The damage reached the matcher: some graphs still fused, some lost a chain.
    let (some, fewer) = (fused_some.get(), fused_fewer.get());
    assert!(
        some > 0 && fewer > 0,
        "fused some: {some}, fused fewer than 8: {fewer}"
    );
}

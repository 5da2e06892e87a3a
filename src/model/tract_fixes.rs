//! Workarounds for tract 0.23.9, one function each.
//!
//! Each one works around a tract behaviour that gives wrong results, costs time at every run, or
//! panics where it should return an error. Its doc comment cites the tract code (crate, file and
//! line in 0.23.9) and says when to drop it: which tract behaviour must change, and what to
//! re-test on a tract upgrade. The plan builders ([`super::plan`]) and the encoders
//! ([`super::encoder`]) call them; nothing else here knows about them.
//!
//! On a tract upgrade, re-test each one as its "Drop it" paragraph says; `tests/runtime.rs`
//! (tract against onnxruntime on every bundled precision) is the check that must stay green.

use tract_onnx::prelude::*;

/// The ONNX parser, told to ignore the graph's `value_info`.
///
/// Quantizers (onnxruntime's among them) copy shape-inference results (`value_info`) with a
/// symbolic batch into the graph. tract-onnx 0.23.9 turns each into an outlet fact
/// (`src/model.rs:193-205`, `ParsingContext::parse_graph`), and the symbolic batch then clashes
/// with the fixed batch of 1 the plan builders give the input; tract infers those facts anyway.
///
/// Drop it when tract-onnx unifies a `value_info` dimension with a concrete input shape (or no
/// longer reads `value_info` by default): re-test by loading the int8 (QDQ, dynamic, static)
/// image towers of `tests/runtime.rs` with `with_ignore_value_info(false)`.
pub(super) fn onnx_parser() -> tract_onnx::Onnx {
    tract_onnx::onnx().with_ignore_value_info(true)
}

/// Checks the one thing about a graph's outputs that tract-onnx 0.23.9's parser does not: that
/// something produces each of them.
///
/// `ParsingContext::parse_graph` (tract-onnx `src/model.rs:187`) looks every graph output up with
/// `outlets_by_name[&*output.name]`, which panics ("no entry found for key") when no node,
/// graph input or initializer has that name: a damaged or hand-edited file would crash the
/// daemon instead of failing to load. Here each graph (and each graph inside a node's
/// attributes: If, Loop, Scan bodies, which tract parses the same way) is checked first, and a
/// missing producer is an error naming the output.
///
/// Drop it when tract-onnx returns an error for an unknown graph output: re-test with this
/// check turned off by running `plan`'s `malformed_graphs_are_errors_naming_the_file`.
pub(super) fn check_graph_outputs(graph: &tract_onnx::pb::GraphProto) -> anyhow::Result<()> {
    let known: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            graph
                .node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    if let Some(missing) = graph
        .output
        .iter()
        .find(|o| !known.contains(o.name.as_str()))
    {
        let graph_name = if graph.name.is_empty() {
            String::new()
        } else {
            format!(" of graph {:?}", graph.name)
        };
        anyhow::bail!(
            "output {:?}{graph_name} is produced by no node, input or initializer",
            missing.name
        );
    }
    for node in &graph.node {
        for attribute in &node.attribute {
            for sub in attribute.g.iter().chain(&attribute.graphs) {
                check_graph_outputs(sub).map_err(|e| {
                    e.context(format!("in node {:?} ({})", node.name, node.op_type))
                })?;
            }
        }
    }
    Ok(())
}

/// Works around a tract 0.23.9 bug that makes QDQ attention blocks compute garbage.
///
/// onnxruntime's static QDQ quantizer writes `DequantizeLinear -> Softmax -> QuantizeLinear`
/// around an attention's Softmax whenever the MatMuls on both sides are quantized (FastViT /
/// MobileCLIP, and any transformer without a Mul between `q @ k^T` and the Softmax).
/// tract-core's `DequantizeLinearF32::declutter` (`src/ops/quant.rs:149-250`) walks from a
/// DequantizeLinear through every successor whose axes mapping is "element-wise unary" up to a
/// QuantizeLinear and replaces the chain with a 256-entry u8 lookup table computed by running the
/// chain on the vector 0..=255. Softmax reports the natural (element-wise) axes mapping
/// (`src/ops/nn/softmax/mod.rs:81-87`) although it normalises along an axis, so the table holds a
/// softmax across the 256 codes, not per row: every probability comes out wrong.
///
/// The fix keeps the Softmax in float on float logits: a Softmax (or LogSoftmax) that reads
/// `DequantizeLinear(QuantizeLinear(x))` reads `x` instead (the fake-quantization of the logits
/// goes; the probabilities stay quantized for the next MatMul). When the DequantizeLinear is not
/// fed by a QuantizeLinear, the pair after the Softmax goes instead: consumers of
/// `DequantizeLinear(QuantizeLinear(softmax))` read the Softmax's output. Either way no
/// DequantizeLinear -> Softmax -> QuantizeLinear chain is left for tract to fold. Returns the
/// number of Softmax nodes changed.
///
/// Drop it when tract no longer folds a Softmax into a lookup table: when Softmax's
/// `axes_mapping` stops calling itself element-wise, or `DequantizeLinearF32::declutter` stops
/// at an operator that normalises along an axis. Re-test on every tract upgrade with this
/// rewrite turned off: `tests/runtime.rs`'s `qdq_softmax_stays_a_softmax` (the six-node repro,
/// `tests/data/models/softmax-qdq.onnx`) and the QDQ image tower's match with onnxruntime must
/// still pass.
///
/// A malformed graph (a node of the chain without the input or output the rewrite follows) is
/// an error naming the node, not a panic: this runs on the protobuf before tract checks it.
pub(super) fn unfold_quantized_softmax(
    graph: &mut tract_onnx::pb::GraphProto,
) -> anyhow::Result<usize> {
    use std::collections::HashMap;
    let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(ix, n)| n.output.iter().map(move |o| (o.as_str(), ix)))
        .collect();
    let op_of = |name: &str| producer.get(name).map(|&ix| &graph.node[ix]);
    let mut rewires: Vec<(usize, usize, String)> = vec![]; // (node, input slot, new source)
    let mut fixed = 0;
    for (ix, node) in graph.node.iter().enumerate() {
        if !matches!(node.op_type.as_str(), "Softmax" | "LogSoftmax") || !is_default(&node.domain) {
            continue;
        }
        let Some(dq) = node.input.first().and_then(|i| op_of(i)) else {
            continue;
        };
        if dq.op_type != "DequantizeLinear" {
            continue;
        }
        if let Some(q) = dq.input.first().and_then(|i| op_of(i))
            && q.op_type == "QuantizeLinear"
        {
            rewires.push((ix, 0, first(q, &q.input, "input")?.clone()));
            fixed += 1;
            continue;
        }
        // The DequantizeLinear reads an integer tensor that was not quantized in the graph:
        // remove the QuantizeLinear -> DequantizeLinear pair after the Softmax instead.
        let softmax_out = first(node, &node.output, "output")?;
        let mut dq_after: Vec<&String> = vec![];
        for q in graph
            .node
            .iter()
            .filter(|q| q.op_type == "QuantizeLinear" && q.input.first() == Some(softmax_out))
        {
            let q_out = first(q, &q.output, "output")?;
            for d in graph
                .node
                .iter()
                .filter(|d| d.op_type == "DequantizeLinear" && d.input.first() == Some(q_out))
            {
                dq_after.push(first(d, &d.output, "output")?);
            }
        }
        for (cix, consumer) in graph.node.iter().enumerate() {
            for (slot, input) in consumer.input.iter().enumerate() {
                if dq_after.contains(&input) {
                    rewires.push((cix, slot, softmax_out.clone()));
                }
            }
        }
        if !dq_after.is_empty() {
            fixed += 1;
        }
    }
    for (ix, slot, source) in rewires {
        // Both indices come from enumerating the same, unchanged graph.
        graph.node[ix].input[slot] = source;
    }
    Ok(fixed)
}

/// The first name of `names` (a node's `input` or `output` list, `what`), or an error naming
/// the node.
fn first<'a>(
    node: &tract_onnx::pb::NodeProto,
    names: &'a [String],
    what: &str,
) -> anyhow::Result<&'a String> {
    names
        .first()
        .ok_or_else(|| anyhow::anyhow!("node {:?} ({}) has no {what}", node.name, node.op_type))
}

/// Computes at load the column sums of integer weights that tract 0.23.9 would recompute on
/// every run.
///
/// A quantized matrix product (MatMulInteger, QLinearMatMul, QLinearConv, ...) is lowered during
/// codegen (tract-core `src/ops/einsum/einsum_matmul.rs:821-890`, `dequant`) into an integer
/// product plus zero-point compensation terms, one of which is `Reduce<Sum>(Cast<i32>(weights))`
/// over K. The weights are constant, but the codegen pass only constant-folds a node whose
/// output is no larger than its input (tract-core `src/optim/prop_const.rs:71`, `PropConst`),
/// and the i8 -> i32 cast is four times larger, so the cast and the sum over the whole weight
/// matrix run on every inference: for an onnxruntime-dynamic ViT-B/32 that is most of its run
/// time. Here every `Reduce` fed (through a `Cast`) by a constant is evaluated once and replaced
/// by its result. Returns how many.
///
/// Drop it when tract's own constant folding computes these sums at load: when `PropConst`'s
/// size rule (`output_mem > input_mem.max(CONST_FOLD_MEM_BUDGET)`) lets a `Cast` + `Reduce`
/// chain whose final output is small fold, or the einsum lowering precomputes the sums of
/// constant weights. Re-test on every tract upgrade by loading a dynamic-int8 tower (ViT-B/32,
/// `benches/README.md`) with `RUST_LOG=edgeclip=debug`: when "integer weight sum(s) computed
/// once at load" is no longer logged, tract folded them itself and this can go.
pub(super) fn fold_constant_weight_sums(model: &mut TypedModel) -> TractResult<usize> {
    use anyhow::Context;
    use tract_onnx::tract_core::internal::TypedModelPatch;
    use tract_onnx::tract_core::ops::cast::Cast;
    use tract_onnx::tract_core::ops::nn::Reduce;
    let mut folded = 0;
    loop {
        let mut found = None;
        for node in model.nodes() {
            if !node.op_is::<Reduce>()
                || node.inputs.len() != 1
                || node.outputs.first().is_none_or(|o| o.successors.is_empty())
            {
                continue;
            }
            let producer = model.node(node.inputs[0].node);
            let konst = if producer.op_is::<Cast>()
                && let Some(&cast_input) = producer.inputs.first()
            {
                model
                    .outlet_fact(cast_input)?
                    .konst
                    .clone()
                    .map(|k| (k, Some(producer)))
            } else {
                model
                    .outlet_fact(node.inputs[0])?
                    .konst
                    .clone()
                    .map(|k| (k, None))
            };
            if let Some((konst, cast)) = konst {
                if let (Some(cast), Some(reduce)) = (cast, node.op_as::<Reduce>())
                    && let Some(to) = cast.op_as::<Cast>().map(|c| c.to)
                    && let Some(sum) = sum_int8_lanes(&konst, to, reduce)
                {
                    found = Some((node.id, sum.into_tvalue()));
                    break;
                }
                let mut value = konst.into_tvalue();
                if let Some(cast) = cast {
                    let Some(out) = cast.op.eval_out_of_plan(tvec!(value))? else {
                        continue;
                    };
                    value = out.into_iter().next().context("cast output")?;
                }
                let Some(out) = node.op.eval_out_of_plan(tvec!(value))? else {
                    continue;
                };
                found = Some((node.id, out.into_iter().next().context("sum output")?));
                break;
            }
        }
        let Some((id, sum)) = found else { break };
        let mut patch = TypedModelPatch::default();
        let name = format!("{}.folded", model.node(id).name);
        let wire = patch.add_const(name, sum.into_tensor())?;
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
        folded += 1;
    }
    if folded > 0 {
        model.prop_consts()?;
        *model = std::mem::take(model).into_compact()?;
    }
    Ok(folded)
}

/// The fast path of [`fold_constant_weight_sums`]: `Reduce<Sum>` over one axis of an int8 or
/// uint8 constant cast to i32, summed lane by lane in one pass. The generic path (the `Cast` then
/// the `Reduce`, evaluated as tract would) first builds the whole weight tensor in i32, four
/// times its size: for ViT-B/32's 88 M int8 weights that was most of a second of start-up.
/// Same result (`tests` below); `None` for any other case, which takes the generic path. Goes
/// with [`fold_constant_weight_sums`].
fn sum_int8_lanes(
    konst: &Tensor,
    to: DatumType,
    reduce: &tract_onnx::tract_core::ops::nn::Reduce,
) -> Option<Tensor> {
    use tract_onnx::tract_core::ndarray::Axis;
    use tract_onnx::tract_core::ops::nn::Reducer;
    fn lanes<T: Datum + Copy + Into<i32>>(t: &Tensor, axis: usize) -> Option<Tensor> {
        let view = t.to_plain_array_view::<T>().ok()?;
        if axis >= view.ndim() {
            return None;
        }
        let sums = view.map_axis(Axis(axis), |lane| {
            lane.iter().map(|&x| x.into()).sum::<i32>()
        });
        Some(sums.insert_axis(Axis(axis)).into_tensor())
    }
    if to != DatumType::I32 || !matches!(reduce.reducer, Reducer::Sum) || reduce.axes.len() != 1 {
        return None;
    }
    match konst.datum_type() {
        DatumType::I8 => lanes::<i8>(konst, reduce.axes[0]),
        DatumType::U8 => lanes::<u8>(konst, reduce.axes[0]),
        _ => None,
    }
}

thread_local! {
    /// Whether this thread is inside [`catch_cuda_panic`].
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread now is caught by [`catch_cuda_panic`] (and turned into an
/// error) rather than a bug that should end the process.
pub fn panic_is_caught() -> bool {
    CATCHING.get()
}

/// Runs `f`, turning a panic into an error carrying the panic's message.
///
/// tract-cuda 0.23.9 panics instead of returning an error where CUDA fails to start: it creates
/// its CUDA context on first use with `expect("Could not create CUDA context")`
/// (`src/context.rs:31-38`, `cuda_context`: a missing CUDA header for NVRTC, no device), and each
/// thread's CUDA stream with `expect("Could not create Cuda Stream")` (`src/context.rs:40-42`,
/// `CUDA_STREAM`, on a thread's first run). The plan builder wraps the preparation of a graph for
/// CUDA in it, and the image encoder its first run on the GPU, so that a GPU that cannot start
/// is an error (`model.runtime = "auto"` then falls back to the CPU) and not a crash.
///
/// Drop it when tract-cuda's `cuda_context` and `CUDA_STREAM` return errors instead of
/// panicking (re-test on each tract upgrade by reading those two places in `context.rs`).
///
/// While `f` runs, [`panic_is_caught`] is true on this thread, so the process's panic hook (which
/// ends the daemon on any other panic, `daemon::exit_on_panic`) lets this one unwind to here.
pub(super) fn catch_cuda_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let outer = CATCHING.replace(true);
    let caught = catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(outer);
    caught.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_catch_cuda_panic_is_known_as_caught() {
        assert!(!panic_is_caught());
        assert_eq!(catch_cuda_panic(panic_is_caught), Ok(true));
        let nested = catch_cuda_panic(|| catch_cuda_panic(|| ()).map(|()| panic_is_caught()));
        assert_eq!(nested, Ok(Ok(true)));
        let e = catch_cuda_panic(|| -> () { panic!("Could not create CUDA context") });
        assert_eq!(e, Err("Could not create CUDA context".to_owned()));
        assert!(!panic_is_caught(), "reset after a caught panic");
    }
    use tract_onnx::pb::{GraphProto, NodeProto};
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            name: output.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn inputs_of<'a>(graph: &'a GraphProto, output: &str) -> Vec<&'a str> {
        let n = graph.node.iter().find(|n| n.output[0] == output).unwrap();
        n.input.iter().map(String::as_str).collect()
    }

    /// A Softmax whose logits were fake-quantized reads the float logits; one fed by an integer
    /// tensor keeps its input and its consumers skip the quantize pair after it instead; a
    /// Softmax outside any quantized chain is left alone.
    #[test]
    fn quantized_softmax_chains_are_unfolded() {
        let mut graph = GraphProto {
            node: vec![
                // logits -> Q -> DQ -> Softmax -> Q -> DQ -> MatMul
                node("QuantizeLinear", &["logits", "s", "z"], "q1"),
                node("DequantizeLinear", &["q1", "s", "z"], "dq1"),
                node("Softmax", &["dq1"], "p1"),
                node("QuantizeLinear", &["p1", "s", "z"], "q2"),
                node("DequantizeLinear", &["q2", "s", "z"], "dq2"),
                node("MatMul", &["dq2", "v"], "out1"),
                // int8 input -> DQ -> Softmax -> Q -> DQ -> MatMul
                node("DequantizeLinear", &["int8", "s", "z"], "dq3"),
                node("Softmax", &["dq3"], "p3"),
                node("QuantizeLinear", &["p3", "s", "z"], "q4"),
                node("DequantizeLinear", &["q4", "s", "z"], "dq4"),
                node("MatMul", &["dq4", "v"], "out3"),
                // A float Softmax.
                node("Softmax", &["plain"], "p5"),
                node("MatMul", &["p5", "v"], "out5"),
            ],
            ..Default::default()
        };
        assert_eq!(unfold_quantized_softmax(&mut graph).unwrap(), 2);
        assert_eq!(inputs_of(&graph, "p1"), ["logits"]);
        assert_eq!(inputs_of(&graph, "out1"), ["dq2", "v"]);
        assert_eq!(inputs_of(&graph, "p3"), ["dq3"]);
        assert_eq!(inputs_of(&graph, "out3"), ["p3", "v"]);
        assert_eq!(inputs_of(&graph, "p5"), ["plain"]);
        assert_eq!(inputs_of(&graph, "out5"), ["p5", "v"]);
    }

    /// A chain the rewrite follows, with a node missing the input or output it reads: an error
    /// naming that node, not a panic (these index the protobuf before tract has checked it).
    #[test]
    fn malformed_quantized_chains_are_errors_naming_the_node() {
        let no_output = |op: &str, inputs: &[&str], name: &str| {
            let mut n = node(op, inputs, name);
            n.output.clear();
            n
        };
        let cases: Vec<(Vec<NodeProto>, &str)> = vec![
            // A QuantizeLinear with no inputs feeds DQ -> Softmax.
            (
                vec![
                    node("QuantizeLinear", &[], "q1"),
                    node("DequantizeLinear", &["q1", "s", "z"], "dq1"),
                    node("Softmax", &["dq1"], "p1"),
                ],
                "node \"q1\" (QuantizeLinear) has no input",
            ),
            // A Softmax without an output, after a DQ of an integer input.
            (
                vec![
                    node("DequantizeLinear", &["int8", "s", "z"], "dq"),
                    no_output("Softmax", &["dq"], "p"),
                ],
                "node \"p\" (Softmax) has no output",
            ),
            // The QuantizeLinear after the Softmax has no output.
            (
                vec![
                    node("DequantizeLinear", &["int8", "s", "z"], "dq"),
                    node("Softmax", &["dq"], "p"),
                    no_output("QuantizeLinear", &["p", "s", "z"], "q"),
                ],
                "node \"q\" (QuantizeLinear) has no output",
            ),
            // The DequantizeLinear after it has none.
            (
                vec![
                    node("DequantizeLinear", &["int8", "s", "z"], "dq"),
                    node("Softmax", &["dq"], "p"),
                    node("QuantizeLinear", &["p", "s", "z"], "q"),
                    no_output("DequantizeLinear", &["q", "s", "z"], "dq2"),
                ],
                "node \"dq2\" (DequantizeLinear) has no output",
            ),
        ];
        for (nodes, message) in cases {
            let mut graph = GraphProto {
                node: nodes,
                ..Default::default()
            };
            let error = unfold_quantized_softmax(&mut graph).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
        // Nodes without inputs or outputs that the rewrite does not follow are left to tract.
        let mut graph = GraphProto {
            node: vec![
                no_output("Relu", &[], "r"),
                node("Softmax", &[], "p"),
                node("DequantizeLinear", &[], "dq"),
                node("Softmax", &["dq"], "p2"),
            ],
            ..Default::default()
        };
        assert_eq!(unfold_quantized_softmax(&mut graph).unwrap(), 0);
    }

    /// The one-pass weight sum gives what tract's own cast to i32 and `Reducer::Sum` give, for
    /// every axis and both int8 types, extremes included.
    #[test]
    fn int8_lane_sums_equal_tracts_cast_and_reduce() {
        let bytes: Vec<u8> = (0..3 * 5 * 7u32)
            .map(|i| match i {
                0 => 0,
                1 => 255,
                2 => 128,
                _ => (i.wrapping_mul(2654435761) >> 24) as u8,
            })
            .collect();
        let signed: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let konsts = [
            Tensor::from_shape(&[3, 5, 7], &bytes).unwrap(),
            Tensor::from_shape(&[3, 5, 7], &signed).unwrap(),
        ];
        for konst in &konsts {
            for axis in 0..3 {
                let reduce = Reduce::new(tvec!(axis), Reducer::Sum);
                let fast = sum_int8_lanes(konst, DatumType::I32, &reduce).unwrap();
                let wide = konst.cast_to::<i32>().unwrap();
                let reference = Reducer::Sum.reduce(&[axis], &wide).unwrap();
                assert_eq!(fast, reference, "{:?} axis {axis}", konst.datum_type());
            }
        }
        // Anything else takes the generic path.
        let reduce = Reduce::new(tvec!(0), Reducer::Sum);
        assert!(sum_int8_lanes(&konsts[0], DatumType::I64, &reduce).is_none());
        let max = Reduce::new(tvec!(0), Reducer::Max);
        assert!(sum_int8_lanes(&konsts[0], DatumType::I32, &max).is_none());
        let two = Reduce::new(tvec!(0, 1), Reducer::Sum);
        assert!(sum_int8_lanes(&konsts[0], DatumType::I32, &two).is_none());
        let floats = Tensor::from_shape(&[2], &[1f32, 2.0]).unwrap();
        assert!(sum_int8_lanes(&floats, DatumType::I32, &reduce).is_none());
    }

    #[test]
    fn cuda_panics_become_errors() {
        assert_eq!(catch_cuda_panic(|| 7), Ok(7));
        // (The panics print their messages on stderr, as the default hook does in the daemon.)
        let message = catch_cuda_panic(|| -> () { panic!("Could not create CUDA context") });
        assert_eq!(message, Err("Could not create CUDA context".into()));
        let formatted = catch_cuda_panic(|| -> () { panic!("no {}", "device") });
        assert_eq!(formatted, Err("no device".into()));
    }
}

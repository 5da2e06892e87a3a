//! The plan builders' tests: the graph cache, and malformed or damaged ONNX graphs.

use super::*;
use crate::model::Bundle;
use crate::model::test_graphs::{model, node, value_info};
use std::path::PathBuf;

fn demo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/demo")
        .join(file)
}

/// The demo image tower's input side in pixels, as its bundle declares it.
fn demo_side() -> usize {
    Bundle::load(demo("")).unwrap().manifest.image.height as usize
}

/// The demo image tower's output for a fixed image, from a decluttered graph optimized as
/// [`cpu_plan`] does.
fn run_graph(mut typed: TypedModel) -> Vec<f32> {
    typed.optimize().unwrap();
    let plan = typed.into_runnable().unwrap();
    let side = demo_side();
    let pixels: Vec<f32> = (0..3 * side * side)
        .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
        .collect();
    let input = Tensor::from_shape(&[1, 3, side, side], &pixels).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn demo_graph(file: &Path, cache: Option<GraphCache>) -> TypedModel {
    let fact = f32::fact([1, 3, demo_side(), demo_side()]).into();
    decluttered_graph(
        file,
        "pixel_values",
        fact,
        "image_embeds",
        cache,
        &mut || 0.0,
        true,
    )
    .unwrap()
}

fn entry(cache: &Path, file: &Path) -> GraphCache {
    let fact = f32::fact([1, 3, demo_side(), demo_side()]).into();
    GraphCache::in_folder(cache, file, &fact, "image_embeds").unwrap()
}

/// An fp32 graph is cached on its first load, read back on the next, and computes the same
/// values to the bit; a changed model file or a damaged entry sends the load back to ONNX.
#[test]
fn cached_graphs_compute_what_the_onnx_file_computes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("visual.fp32.onnx");
    std::fs::copy(demo("visual.fp32.onnx"), &model).unwrap();
    let cache = dir.path().join("cache");
    let uncached = run_graph(demo_graph(&model, None));

    assert!(matches!(entry(&cache, &model).read(), Cached::Missing));
    let first = run_graph(demo_graph(&model, Some(entry(&cache, &model))));
    let Cached::Graph(cached) = entry(&cache, &model).read() else {
        panic!("the first load did not cache the graph");
    };
    assert_eq!(run_graph(cached), uncached);
    assert_eq!(first, uncached);

    // A damaged entry is ignored, then rewritten by the next load.
    let tar = entry(&cache, &model).path().to_path_buf();
    let len = std::fs::metadata(&tar).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tar)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert!(matches!(entry(&cache, &model).read(), Cached::Missing));
    assert_eq!(
        run_graph(demo_graph(&model, Some(entry(&cache, &model)))),
        uncached
    );
    let Cached::Graph(rewritten) = entry(&cache, &model).read() else {
        panic!("the damaged entry was not rewritten");
    };
    assert_eq!(run_graph(rewritten), uncached);

    // Another modification time: the entry no longer matches.
    std::fs::File::options()
        .write(true)
        .open(&model)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    assert!(matches!(entry(&cache, &model).read(), Cached::Missing));
}

/// tract 0.23 cannot write its int8 quantization operators to NNEF: the QDQ graph loads from
/// ONNX, leaves no graph in the cache folder, only a stamp marked unwritable, and the next
/// load does not try to write it again.
#[test]
fn int8_graphs_are_not_cached_nor_retried() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo("visual.onnx");
    let uncached = run_graph(demo_graph(&model, None));
    assert_eq!(
        run_graph(demo_graph(&model, Some(entry(dir.path(), &model)))),
        uncached
    );
    assert!(matches!(
        entry(dir.path(), &model).read(),
        Cached::Unwritable
    ));
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path().join("graphs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].extension().is_some_and(|x| x == "stamp"),
        "{left:?}"
    );

    // A second load leaves the marker alone: no second attempt rewrites it.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&left[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        run_graph(demo_graph(&model, Some(entry(dir.path(), &model)))),
        uncached
    );
    let after = std::fs::metadata(&left[0]).unwrap().modified().unwrap();
    assert_eq!(after, old);
}

/// A one-input graph (`x`, float [1, 4]) of `nodes`, its output `y`.
fn model_of(nodes: Vec<tract_onnx::pb::NodeProto>) -> tract_onnx::pb::ModelProto {
    let value = |name: &str| value_info(name, 1, &[1, 4]);
    model(nodes, vec![], value("x"), value("y"))
}

/// Malformed graphs are errors naming the file, not panics: the protobuf rewrites check
/// what they index (naming the node), tract checks the rest.
#[test]
fn malformed_graphs_are_errors_naming_the_file() {
    let path = Path::new("/models/bad.onnx");
    let error = |nodes| match parse_proto(path, model_of(nodes), true) {
        Ok(_) => panic!("a malformed graph parsed"),
        Err(e) => e.to_string(),
    };
    // A QuantizeLinear with no inputs in front of DequantizeLinear -> Softmax.
    let e = error(vec![
        node("QuantizeLinear", &[], &["q"]),
        node("DequantizeLinear", &["q", "s", "z"], &["dq"]),
        node("Softmax", &["dq"], &["y"]),
    ]);
    assert!(
        e.starts_with("/models/bad.onnx: reading the ONNX graph: "),
        "{e}"
    );
    assert!(
        e.contains(r#"node "QuantizeLinear_q" (QuantizeLinear) has no input"#),
        "{e}"
    );
    // A graph output nothing produces (tract 0.23.9's parser would panic).
    let e = error(vec![node("Relu", &["x"], &["z"])]);
    assert!(e.contains(r#"output "y" is produced by no node"#), "{e}");
    // Nodes with no inputs, no outputs, an unknown input, an unknown operator; no graph.
    for nodes in [
        vec![node("Relu", &[], &["y"])],
        vec![node("Relu", &["x"], &[])],
        vec![node("Relu", &["nowhere"], &["y"])],
        vec![
            node("Softmax", &["x"], &["y", "extra"]),
            node("Relu", &["y"], &[]),
        ],
        vec![node("NoSuchOp", &["x"], &["y"])],
        vec![node("DequantizeLinear", &[], &["y"])],
    ] {
        // Some only fail when tract types the graph: `load_graph`'s caller does that next.
        if let Ok(model) = parse_proto(path, model_of(nodes.clone()), true) {
            assert!(model.into_typed().is_err(), "{nodes:?}");
        }
    }
    let mut no_graph = model_of(vec![]);
    no_graph.graph = None;
    assert!(parse_proto(path, no_graph, true).is_err());
}

/// Random damage to the demo image towers' protobufs (nodes losing inputs or outputs,
/// inputs renamed, operators swapped for ones the rewrites follow) gives an error or a graph,
/// never a panic, through the rewrites, parsing and typing: the fp32 file, and the int8 one
/// whose integer convolutions `int8_conv` matches. Cases: `EDGECLIP_FUZZ_CASES` (64) per file.
///
/// Not swapped in here: `ConvInteger`. On an input whose rank differs from its kernel's,
/// tract-hir 0.23.9 panics while typing it (a `debug_assert` in `Conv::output_shape`, in builds
/// with debug assertions); `int8_conv`'s own fuzz test damages graphs that way and runs the
/// rewrite alone. The rank-1 input that made tract-core panic is an error now:
/// `a_convolution_on_a_rank_1_input_is_an_error`.
#[test]
fn damaged_onnx_files_do_not_panic() {
    use proptest::prelude::*;
    let cases = std::env::var("EDGECLIP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    for file in ["visual.fp32.onnx", "visual.onnx"] {
        let pristine = tract_fixes::onnx_parser()
            .proto_model_for_path(demo(file))
            .unwrap();
        let nodes = pristine.graph.as_ref().unwrap().node.len();
        let damage = prop::collection::vec((0..nodes, 0..7u8), 1..4);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&damage, |damage| {
                let mut proto = pristine.clone();
                let graph = proto.graph.as_mut().unwrap();
                for (ix, how) in damage {
                    let n = &mut graph.node[ix];
                    match how {
                        0 => n.input.clear(),
                        1 => n.output.clear(),
                        2 => n.input.truncate(1),
                        3 => n.input.push("nowhere".into()),
                        4 => n.op_type = "QuantizeLinear".into(),
                        5 => n.op_type = "Relu".into(),
                        _ => n.op_type = "Softmax".into(),
                    }
                }
                if let Ok(mut model) = parse_proto(Path::new(file), proto, true) {
                    let _ = model.analyse(false);
                    let _ = model.into_typed();
                }
                Ok(())
            })
            .unwrap();
    }
}

/// A `ConvInteger` on a rank-1 input (and a rank-1 kernel) is an error naming the shape when the
/// graph is typed. tract-core 0.23.9 panicked there ("attempt to subtract with overflow" in
/// `DataShape::hw_rank`); edgeclip's patch (`vendor/tract-core`, `DataFormat::shape`) checks
/// the rank first.
#[test]
fn a_convolution_on_a_rank_1_input_is_an_error() {
    const UINT8: i32 = 2;
    const INT32: i32 = 6;
    let proto = model(
        vec![node("ConvInteger", &["x", "x"], &["y"])],
        vec![],
        value_info("x", UINT8, &[4]),
        value_info("y", INT32, &[4]),
    );
    let e = match parse_proto(Path::new("/models/bad.onnx"), proto, true) {
        Err(e) => format!("{e:?}"),
        Ok(model) => format!(
            "{:?}",
            model.into_typed().expect_err("a rank-1 ConvInteger typed")
        ),
    };
    assert!(e.contains(r#"node #1 "ConvInteger_y""#), "{e}");
    assert!(
        e.contains("a NCHW tensor needs 2 axes at least, this one has shape [Val(4)]"),
        "{e}"
    );
}

/// A graph takes one-call batches when its batch axis is symbolic and its int8 scales do not
/// depend on the batch: the demo's tower as exported does; with its batch axis pinned to 1 in the
/// file, or quantized dynamically (the tiny CLIP fixture's int8-dynamic tower), it does not, and
/// the reason says why.
#[test]
fn batched_plans_need_a_symbolic_batch_axis_and_no_dynamic_quantization() {
    let side = demo_side();
    let tail = [3, side, side];
    let path = demo("visual.fp32.onnx");
    let proto = tract_fixes::onnx_parser()
        .proto_model_for_path(&path)
        .unwrap();
    let batched = batched_from_proto(
        &path,
        proto.clone(),
        "pixel_values",
        tail,
        "image_embeds",
        64,
    );
    assert!(batched.unwrap().is_ok());

    let mut fixed = proto;
    let dims = &mut fixed.graph.as_mut().unwrap().input[0];
    let Some(tract_onnx::pb::type_proto::Value::TensorType(tensor)) =
        dims.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("the demo's input is a tensor");
    };
    tensor.shape.as_mut().unwrap().dim[0].value =
        Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(1));
    let why = batched_from_proto(&path, fixed, "pixel_values", tail, "image_embeds", 64)
        .unwrap()
        .unwrap_err();
    assert!(why.contains("fixed at 1"), "{why}");

    let tiny = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models/hf-clip-tiny/visual.int8-dynamic.onnx");
    let why = build_batched(&tiny, "pixel_values", [3, 224, 224], "image_embeds", 32)
        .unwrap()
        .unwrap_err();
    assert!(why.contains("DynamicQuantizeLinear"), "{why}");
}

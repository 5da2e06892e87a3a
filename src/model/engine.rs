//! Runs a bundle's towers through tract.
//!
//! Each tower is parsed, given a fixed input shape (batch 1), typed, optimized and turned into a
//! plan once, at load. A plan is `Send + Sync`: the daemon loads it on the main thread and runs it
//! on the inference thread.
//!
//! The image tower can also run on a GPU through tract's CUDA runtime (builds with the `cuda` or
//! `cuda-12060` feature, see [`super::device`]): the typed, decluttered graph is handed to
//! tract-cuda, which moves every operator it has a kernel for to the GPU and leaves the others on
//! the CPU. The text tower always runs on the CPU (it runs once per prompt, and is cached).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::graph_cache::{Cached, GraphCache};
use super::{Bundle, Device, ModelError, Precision};

/// A ready-to-run tower.
#[derive(Debug, Clone)]
enum Plan {
    /// tract's CPU plan, optimized for this CPU, and the run state kept between runs.
    Cpu(Arc<TypedRunnableModel>, StateSlot),
    /// What tract's CUDA runtime prepared.
    #[cfg(feature = "gpu-runtime")]
    Cuda(Arc<dyn tract_onnx::tract_core::runtime::Runnable>),
}

impl Plan {
    fn cpu(plan: Arc<TypedRunnableModel>) -> Plan {
        Plan::Cpu(plan, StateSlot::default())
    }

    fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        match self {
            Plan::Cpu(plan, slot) => slot.run(plan, inputs, tract_onnx::tract_core::plan::eval),
            #[cfg(feature = "gpu-runtime")]
            Plan::Cuda(runnable) => runnable.run(inputs),
        }
    }
}

/// The run state of a CPU plan (tract's `SimpleState`: one state per operator, the table of
/// values), built on the first run and reused by the next ones, so that a frame does not build a
/// fresh one (`SimplePlan::run` does). Between runs it holds no activations: tract clears them at
/// the end of each run. A clone of the encoder starts with an empty slot.
#[derive(Default)]
struct StateSlot(std::sync::Mutex<Option<TypedSimpleState>>);

impl StateSlot {
    fn run<E>(
        &self,
        plan: &Arc<TypedRunnableModel>,
        inputs: TVec<TValue>,
        eval: E,
    ) -> TractResult<TVec<TValue>>
    where
        E: for<'a, 'b, 'c> FnMut(
            &'a tract_onnx::tract_core::plan::EvalContext<'a>,
            Option<&'b mut (dyn tract_onnx::tract_core::ops::OpState + 'static)>,
            &'c TypedNode,
            TVec<TValue>,
        ) -> TractResult<TVec<TValue>>,
    {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = match slot.as_mut() {
            Some(state) => state,
            None => slot.insert(plan.spawn()?),
        };
        let result = state.run_plan_with_eval(inputs, eval);
        if result.is_err() {
            // A failed run can leave values behind: start the next one from a fresh state.
            *slot = None;
        }
        result
    }
}

impl Clone for StateSlot {
    fn clone(&self) -> Self {
        StateSlot::default()
    }
}

impl std::fmt::Debug for StateSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateSlot")
    }
}

/// Sets how many threads tract's matrix products use, for every plan in the process.
///
/// `1` keeps everything on the calling thread (the right choice on a busy single board).
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{Executor, set_default_executor};
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}

fn graph_err(path: &Path, what: &str) -> impl FnOnce(anyhow::Error) -> ModelError + use<> {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source: anyhow::Error| ModelError::Graph { path, what, source }
}

/// Parses `path`, checks its single input against the manifest, pins it to `input_fact` and
/// keeps only the `output` output.
fn load_graph(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<InferenceModel, ModelError> {
    // Quantizers copy shape-inference results (`value_info`) with a symbolic batch into the graph;
    // they would clash with the fixed batch of 1 given below, and tract infers them anyway.
    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let mut proto = onnx
        .proto_model_for_path(path)
        .map_err(graph_err(path, "parsing the ONNX file"))?;
    if let Some(graph) = proto.graph.as_mut() {
        let fixed = unfold_quantized_softmax(graph);
        if fixed > 0 {
            log::debug!(
                "{}: {fixed} Softmax node(s) between DequantizeLinear and QuantizeLinear now read the float logits (tract 0.23 would fold them into a wrong lookup table)",
                path.display()
            );
        }
    }
    let dir = path.parent().and_then(|d| d.to_str());
    let parsed = onnx
        .parse(&proto, dir)
        .map_err(graph_err(path, "parsing the ONNX file"))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(graph_err(path, "parsing the ONNX file")(anyhow::anyhow!(
            "unresolved inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    let mut model = parsed.model;

    let names: Vec<String> = model
        .input_outlets()
        .map_err(graph_err(path, "listing inputs"))?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    if names.len() != 1 || names[0] != input {
        return Err(ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("expected one input named {input:?}, the graph has {names:?}"),
        });
    }
    // A graph that declares a concrete input shape must agree with the manifest.
    let declared = model
        .input_fact(0)
        .map_err(graph_err(path, "reading the input"))?
        .clone();
    check_declared_shape(path, input, &declared, &input_fact)?;

    model
        .set_input_fact(0, input_fact)
        .map_err(graph_err(path, "setting the input shape"))?;
    model
        .select_outputs_by_name([output])
        .map_err(|e| ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("no output named {output:?}: {e:#}"),
        })?;
    Ok(model)
}

/// The concrete shape of a typed graph's output.
fn output_shape(path: &Path, typed: &TypedModel, output: &str) -> Result<Vec<usize>, ModelError> {
    typed
        .output_fact(0)
        .map_err(graph_err(path, "reading the output"))?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("output {output:?} has no fixed shape"),
        })
}

/// The typed, decluttered graph of `path` with its input pinned to `input_fact` and only
/// `output` kept: from `cache` when it holds this file ([`GraphCache`]), else parsed, typed and
/// decluttered from the ONNX file, and then stored in `cache` unless an earlier start found that
/// tract cannot write it. `lap` times the
/// stages for the debug log.
fn decluttered_graph(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
    cache: Option<GraphCache>,
    lap: &mut dyn FnMut() -> f64,
) -> Result<TypedModel, ModelError> {
    let unwritable = match cache.as_ref().map_or(Cached::Missing, GraphCache::read) {
        Cached::Graph(typed) => {
            log::debug!(
                "{}: decluttered graph read from the graph cache in {:.0} ms",
                path.display(),
                lap()
            );
            return Ok(typed);
        }
        Cached::Missing => false,
        Cached::Unwritable => true,
    };
    let model = load_graph(path, input, input_fact, output)?;
    let parse_ms = lap();
    let mut typed = model
        .into_typed()
        .map_err(graph_err(path, "typing the graph"))?;
    let type_ms = lap();
    typed
        .declutter()
        .map_err(graph_err(path, "simplifying the graph"))?;
    let declutter_ms = lap();
    if let Some(cache) = cache.filter(|_| !unwritable) {
        cache.store(&typed, path);
    }
    log::debug!(
        "{}: parse {parse_ms:.0} ms, type {type_ms:.0}, declutter {declutter_ms:.0}, cache {:.0}",
        path.display(),
        lap()
    );
    Ok(typed)
}

/// Parses `path`, pins its single input to `input_fact` and its output to `output`, and builds
/// the optimized CPU plan. Returns the plan and the output's shape.
fn build_plan(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    // Each stage's time at debug level (`RUST_LOG=edgeclip=debug`): where start-up goes.
    let started = std::time::Instant::now();
    let mut lap = {
        let mut last = started;
        move || {
            let now = std::time::Instant::now();
            let ms = (now - last).as_secs_f64() * 1e3;
            last = now;
            ms
        }
    };
    let cache = GraphCache::for_file(path, &input_fact, output);
    let mut typed = decluttered_graph(path, input, input_fact, output, cache, &mut lap)?;
    typed
        .optimize()
        .map_err(graph_err(path, "optimizing the graph"))?;
    let optimize_ms = lap();
    let folded =
        fold_constant_weight_sums(&mut typed).map_err(graph_err(path, "folding weight sums"))?;
    if folded > 0 {
        log::debug!(
            "{}: {folded} integer weight sum(s) computed once at load",
            path.display()
        );
    }
    let out_shape = output_shape(path, &typed, output)?;
    let plan = typed
        .into_runnable()
        .map_err(graph_err(path, "building the execution plan"))?;
    let rest_ms = lap();
    log::debug!(
        "{}: loaded in {:.0} ms: optimize {optimize_ms:.0}, fold + plan {rest_ms:.0}",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok((Plan::cpu(plan), out_shape))
}

/// Like [`build_plan`], through tract's CUDA runtime: the decluttered graph (not the one
/// optimized for the CPU, whose operators tract-cuda does not translate) is prepared by
/// tract-cuda. The first preparation in a process creates the CUDA context, which compiles
/// tract-cuda's kernels unless they are cached (see [`super::device`]).
#[cfg(feature = "gpu-runtime")]
fn build_cuda_plan(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tract_onnx::tract_core::runtime::runtime_for_name;

    let unavailable = |reason: String| ModelError::Runtime {
        wanted: "cuda",
        reason,
    };
    // Not through the graph cache: tract-cuda was verified on graphs decluttered from ONNX.
    let model = load_graph(path, input, input_fact, output)?;
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(graph_err(path, "typing and decluttering the graph"))?;
    let out_shape = output_shape(path, &typed, output)?;
    let runtime = match runtime_for_name("cuda") {
        Ok(Some(rt)) => rt,
        Ok(None) => return Err(unavailable("tract's CUDA runtime is not registered".into())),
        Err(e) => return Err(unavailable(format!("{e:#}"))),
    };
    if let Some(dir) = super::device::kernel_dir()
        && super::device::count_kernels(&dir) == 0
    {
        log::info!(
            "no compiled CUDA kernels in {} yet: tract-cuda compiles them now (about 90 s, once; \
             `edgeclip warmup` does it at install time)",
            dir.display()
        );
    }
    // tract-cuda creates its CUDA context (and compiles or loads its kernels) on first use, and
    // panics when that fails (`src/context.rs`, `cuda_context`: a missing CUDA header for NVRTC,
    // no device): turn that into an error.
    let prepared = catch_unwind(AssertUnwindSafe(|| runtime.prepare(typed)));
    let runnable = match prepared {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(graph_err(path, "preparing the graph for CUDA")(e)),
        Err(panic) => {
            return Err(unavailable(format!(
                "tract's CUDA runtime failed to start: {}",
                panic_message(&panic)
            )));
        }
    };
    Ok((Plan::Cuda(Arc::from(runnable)), out_shape))
}

#[cfg(feature = "gpu-runtime")]
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Works around a tract 0.23.9 bug that makes QDQ attention blocks compute garbage.
///
/// onnxruntime's static QDQ quantizer writes `DequantizeLinear -> Softmax -> QuantizeLinear`
/// around an attention's Softmax whenever the MatMuls on both sides are quantized (FastViT /
/// MobileCLIP, and any transformer without a Mul between `q @ k^T` and the Softmax).
/// tract-core's `DequantizeLinearF32::declutter` (ops/quant.rs:149-250) walks from a
/// DequantizeLinear through every successor whose axes mapping is "element-wise unary" up to a
/// QuantizeLinear and replaces the chain with a 256-entry u8 lookup table computed by running the
/// chain on the vector 0..=255. Softmax reports the natural (element-wise) axes mapping
/// (ops/nn/softmax/mod.rs:81-87) although it normalises along an axis, so the table holds a
/// softmax across the 256 codes, not per row: every probability comes out wrong.
///
/// The fix keeps the Softmax in float on float logits: a Softmax (or LogSoftmax) that reads
/// `DequantizeLinear(QuantizeLinear(x))` reads `x` instead (the fake-quantization of the logits
/// goes; the probabilities stay quantized for the next MatMul). When the DequantizeLinear is not
/// fed by a QuantizeLinear, the pair after the Softmax goes instead: consumers of
/// `DequantizeLinear(QuantizeLinear(softmax))` read the Softmax's output. Either way no
/// DequantizeLinear -> Softmax -> QuantizeLinear chain is left for tract to fold. Returns the
/// number of Softmax nodes changed.
fn unfold_quantized_softmax(graph: &mut tract_onnx::pb::GraphProto) -> usize {
    use std::collections::HashMap;
    let is_default = |d: &str| d.is_empty() || d == "ai.onnx";
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(ix, n)| n.output.iter().map(move |o| (o.clone(), ix)))
        .collect();
    let op_of = |name: &str| producer.get(name).map(|&ix| &graph.node[ix]);
    let mut rewires: Vec<(usize, usize, String)> = vec![]; // (node, input slot, new source)
    let mut fixed = 0;
    for (ix, node) in graph.node.iter().enumerate() {
        if !matches!(node.op_type.as_str(), "Softmax" | "LogSoftmax") || !is_default(&node.domain) {
            continue;
        }
        let Some(dq) = node.input.first().and_then(|i| op_of(i.as_str())) else {
            continue;
        };
        if dq.op_type != "DequantizeLinear" {
            continue;
        }
        if let Some(q) = dq.input.first().and_then(|i| op_of(i.as_str()))
            && q.op_type == "QuantizeLinear"
        {
            rewires.push((ix, 0, q.input[0].clone()));
            fixed += 1;
            continue;
        }
        // The DequantizeLinear reads an integer tensor that was not quantized in the graph:
        // remove the QuantizeLinear -> DequantizeLinear pair after the Softmax instead.
        let softmax_out = &node.output[0];
        let dq_after: Vec<&String> = graph
            .node
            .iter()
            .filter(|q| q.op_type == "QuantizeLinear" && q.input.first() == Some(softmax_out))
            .flat_map(|q| {
                graph
                    .node
                    .iter()
                    .filter(move |d| {
                        d.op_type == "DequantizeLinear" && d.input.first() == q.output.first()
                    })
                    .map(|d| &d.output[0])
            })
            .collect();
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
        graph.node[ix].input[slot] = source;
    }
    fixed
}

/// Computes at load the column sums of integer weights that tract 0.23.9 would recompute on
/// every run.
///
/// A quantized matrix product (MatMulInteger, QLinearMatMul, QLinearConv, ...) is lowered during
/// codegen (tract-core ops/einsum/einsum_matmul.rs:821-890, `dequant`) into an integer product
/// plus zero-point compensation terms, one of which is `Reduce<Sum>(Cast<i32>(weights))` over K.
/// The weights are constant, but the codegen pass only constant-folds a node whose output is no
/// larger than its input (optim/prop_const.rs), and the i8 -> i32 cast is four times larger, so
/// the cast and the sum over the whole weight matrix run on every inference: for an
/// onnxruntime-dynamic ViT-B/32 that is most of its run time. Here every `Reduce` fed (through
/// a `Cast`) by a constant is evaluated once and replaced by its result. Returns how many.
fn fold_constant_weight_sums(model: &mut TypedModel) -> TractResult<usize> {
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
                || node.outputs[0].successors.is_empty()
            {
                continue;
            }
            let producer = model.node(node.inputs[0].node);
            let konst = if producer.op_is::<Cast>() {
                model
                    .outlet_fact(producer.inputs[0])?
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
/// Same result (`tests` below); `None` for any other case, which takes the generic path.
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

fn check_declared_shape(
    path: &Path,
    input: &str,
    declared: &InferenceFact,
    wanted: &InferenceFact,
) -> Result<(), ModelError> {
    let (Some(declared_rank), Ok(Some(wanted))) = (
        declared.shape.rank().concretize(),
        wanted.shape.as_concrete_finite(),
    ) else {
        return Ok(());
    };
    let mismatch = || ModelError::Shape {
        path: path.to_path_buf(),
        message: format!(
            "input {input:?} is declared as {:?} in the graph but the bundle gives {:?}",
            declared.shape, wanted
        ),
    };
    if declared_rank as usize != wanted.len() {
        return Err(mismatch());
    }
    // Axis 0 is the batch; every other axis the graph fixes must match.
    for (axis, dim) in declared.shape.dims().enumerate().skip(1) {
        if let Some(TDim::Val(d)) = dim.concretize()
            && d as usize != wanted[axis]
        {
            return Err(mismatch());
        }
    }
    Ok(())
}

fn check_output(path: &Path, shape: &[usize], dim: usize) -> Result<(), ModelError> {
    if shape != [1, dim] {
        return Err(ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("output shape is {shape:?}, the bundle's embed_dim says [1, {dim}]"),
        });
    }
    Ok(())
}

fn run_err(path: &Path) -> impl FnOnce(anyhow::Error) -> ModelError + '_ {
    move |source| ModelError::Graph {
        path: path.to_path_buf(),
        what: "running the graph".into(),
        source,
    }
}

/// One node of an optimized plan as `op name: details` (a matrix product's details name the
/// kernel tract picked).
fn describe(node: &TypedNode) -> String {
    let info = node.op.info().unwrap_or_default().join("; ");
    format!("{}: {}", node.op.name(), info)
}

/// The image tower of a bundle, ready to run on one `[1, 3, H, W]` tensor at a time.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    plan: Plan,
    path: PathBuf,
    precision: Precision,
    device: Device,
    shape: [usize; 4],
    dim: usize,
}

impl ImageEncoder {
    /// Loads the bundle's image tower at `precision` (the default file when `None`) for the CPU.
    pub fn load(bundle: &Bundle, precision: Option<Precision>) -> Result<ImageEncoder, ModelError> {
        ImageEncoder::load_on(bundle, precision, Device::Cpu)
    }

    /// Loads the bundle's image tower for `device`. With `precision` `None`, the device picks
    /// among the shipped files ([`Device::pick_precision`]: on the CPU by its int8 dot-product
    /// instructions and the file's int8 form, on a GPU an fp16 or fp32 variant).
    ///
    /// On a GPU the tower is also run once on a blank image, so that kernels compiled or loaded
    /// on first use and the CUDA libraries' handles are ready before the first frame.
    pub fn load_on(
        bundle: &Bundle,
        precision: Option<Precision>,
        device: Device,
    ) -> Result<ImageEncoder, ModelError> {
        let precision = precision.or_else(|| {
            let (pick, why) = device.pick_precision(&bundle.image_precisions());
            if let Some(p) = pick {
                log::info!("image tower: the {p} file on the {device} ({why})");
            }
            pick
        });
        let (path, precision) = bundle.image_onnx(precision)?;
        if device == Device::Cpu
            && let Some(why) =
                super::device::slow_on_cpu(precision, super::device::cpu_has_int8_dot())
        {
            log::warn!(
                "image tower {} ({precision}) will be slow on this CPU: {why}",
                path.display()
            );
        }
        let tower = &bundle.manifest.image;
        let shape = [1, 3, tower.height as usize, tower.width as usize];
        let fact = f32::fact(shape).into();
        let (plan, out) = match device {
            Device::Cpu => build_plan(&path, &tower.input, fact, &tower.output)?,
            #[cfg(feature = "gpu-runtime")]
            Device::Cuda => build_cuda_plan(&path, &tower.input, fact, &tower.output)?,
            #[cfg(not(feature = "gpu-runtime"))]
            Device::Cuda => {
                return Err(ModelError::Runtime {
                    wanted: "cuda",
                    reason: "this binary was built without CUDA".into(),
                });
            }
        };
        check_output(&path, &out, bundle.embed_dim())?;
        let encoder = ImageEncoder {
            plan,
            path,
            precision,
            device,
            shape,
            dim: bundle.embed_dim(),
        };
        if device != Device::Cpu {
            encoder.first_run()?;
        }
        Ok(encoder)
    }

    /// Loads the bundle's image tower where `runtime` (`model.runtime`, `--runtime`) says, and
    /// logs where and why ([`super::device::select`]). With `auto`, a GPU that is found but
    /// cannot run the tower (tract-cuda failing to start, say) is logged and the CPU used instead.
    pub fn load_for(
        bundle: &Bundle,
        precision: Option<Precision>,
        runtime: super::Runtime,
    ) -> Result<ImageEncoder, ModelError> {
        let selection = super::device::select(runtime)?;
        log::info!(
            "runtime {runtime}: the image tower runs on the {} ({})",
            match selection.device {
                Device::Cpu => "CPU",
                Device::Cuda => "GPU (CUDA)",
            },
            selection.reason
        );
        match ImageEncoder::load_on(bundle, precision, selection.device) {
            Err(e) if runtime == super::Runtime::Auto && selection.device != Device::Cpu => {
                log::warn!("the GPU cannot run the image tower, using the CPU instead: {e}");
                ImageEncoder::load_on(bundle, precision, Device::Cpu)
            }
            result => result,
        }
    }

    /// One run on a blank image, panics (tract-cuda creates a thread's CUDA stream and library
    /// handles on its first run there, and panics when that fails) turned into errors.
    fn first_run(&self) -> Result<(), ModelError> {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        let pixels = vec![0f32; self.input_len()];
        let mut out = vec![0f32; self.dim];
        match catch_unwind(AssertUnwindSafe(|| self.encode_into(&pixels, &mut out))) {
            Ok(result) => result,
            Err(_) => Err(ModelError::Runtime {
                wanted: self.device.as_str(),
                reason: format!(
                    "{}: the first run on the device panicked (see the message above)",
                    self.path.display()
                ),
            }),
        }
    }

    /// Where it runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Loads an image tower from an ONNX file without a bundle (benchmarks, model tools): input
    /// `[1, 3, height, width]` f32 named `input`, output `[1, D]` named `output`. `precision` is
    /// only recorded.
    pub fn load_onnx(
        path: &Path,
        input: &str,
        output: &str,
        height: usize,
        width: usize,
        precision: Precision,
    ) -> Result<ImageEncoder, ModelError> {
        let shape = [1, 3, height, width];
        let (plan, out) = build_plan(path, input, f32::fact(shape).into(), output)?;
        let dim = match out[..] {
            [1, d] => d,
            _ => {
                return Err(ModelError::Shape {
                    path: path.to_path_buf(),
                    message: format!("output shape is {out:?}, expected [1, D]"),
                });
            }
        };
        Ok(ImageEncoder {
            plan,
            path: path.to_path_buf(),
            precision,
            shape,
            dim,
            device: Device::Cpu,
        })
    }

    /// What the optimized plan runs: one line per node, `op name: details`, where the details of
    /// a matrix product name the kernel tract picked (`OptMatMul ... with [avx2_mmm_i32_8x8]`).
    /// For finding out which kernels an int8 graph really uses.
    /// Empty for a plan on the GPU (tract-cuda's runnable does not expose its graph).
    pub fn plan_summary(&self) -> Vec<String> {
        match &self.plan {
            Plan::Cpu(plan, _) => plan.model().nodes().iter().map(describe).collect(),
            #[cfg(feature = "gpu-runtime")]
            Plan::Cuda(_) => Vec::new(),
        }
    }

    /// Runs the tower `iters` times on `pixels` (CPU plans only) and returns where the time went:
    /// per node of the optimized plan, in execution order, its operator (`name()` and details,
    /// as in [`ImageEncoder::plan_summary`]) and its total time over the runs. For finding out
    /// what a graph spends its time on (`examples/onnx_probe.rs --profile`).
    pub fn profile(
        &self,
        pixels: &[f32],
        iters: usize,
    ) -> Result<Vec<(String, std::time::Duration)>, ModelError> {
        let (plan, slot) = match &self.plan {
            Plan::Cpu(plan, slot) => (plan, slot),
            #[cfg(feature = "gpu-runtime")]
            Plan::Cuda(_) => {
                return Err(run_err(&self.path)(anyhow::anyhow!(
                    "profiling needs a CPU plan"
                )));
            }
        };
        let nodes = plan.model().nodes();
        let mut times = vec![std::time::Duration::ZERO; nodes.len()];
        let mut seen = vec![false; nodes.len()];
        let mut order = Vec::with_capacity(nodes.len());
        for _ in 0..iters {
            let input = Tensor::from_shape(&self.shape, pixels).map_err(run_err(&self.path))?;
            slot.run(plan, tvec!(input.into()), |ctx, state, node, inputs| {
                let started = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                times[node.id] += started.elapsed();
                if !std::mem::replace(&mut seen[node.id], true) {
                    order.push(node.id);
                }
                out
            })
            .map_err(run_err(&self.path))?;
        }
        Ok(order
            .into_iter()
            .map(|id| (describe(&nodes[id]), times[id]))
            .collect())
    }

    /// The ONNX file this encoder runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The input shape, `[1, 3, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Number of f32 values in one input.
    pub fn input_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Runs the tower on one preprocessed image (NCHW, `input_len()` values) and writes the raw
    /// (not normalised) embedding into `out` (`dim()` values).
    pub fn encode_into(&self, pixels: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        if pixels.len() != self.input_len() || out.len() != self.dim {
            return Err(ModelError::Shape {
                path: self.path.clone(),
                message: format!(
                    "encode called with {} input values and room for {} outputs, expected {} and {}",
                    pixels.len(),
                    out.len(),
                    self.input_len(),
                    self.dim
                ),
            });
        }
        let input = Tensor::from_shape(&self.shape, pixels).map_err(run_err(&self.path))?;
        let result = self
            .plan
            .run(tvec!(input.into()))
            .map_err(run_err(&self.path))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(run_err(&self.path))?;
        let view = view
            .as_slice()
            .ok_or_else(|| run_err(&self.path)(anyhow::anyhow!("output is not contiguous")))?;
        out.copy_from_slice(view);
        Ok(())
    }

    /// Like [`ImageEncoder::encode_into`], returning a new vector.
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0.0; self.dim];
        self.encode_into(pixels, &mut out)?;
        Ok(out)
    }
}

/// The text tower of a bundle, run on one tokenized text at a time.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    plan: Plan,
    path: PathBuf,
    precision: Precision,
    context: usize,
}

impl TextEncoder {
    /// Loads the bundle's text tower at `precision` (the default file when `None`).
    pub fn load(bundle: &Bundle, precision: Option<Precision>) -> Result<TextEncoder, ModelError> {
        let (path, precision) = bundle.text_onnx(precision)?;
        let tower = bundle
            .manifest
            .text
            .as_ref()
            .ok_or_else(|| ModelError::NoTextTower {
                path: bundle.manifest_path(),
            })?;
        let context = tower.context_length;
        let fact = i64::fact([1, context]).into();
        let (plan, out) = build_plan(&path, &tower.input, fact, &tower.output)?;
        check_output(&path, &out, bundle.embed_dim())?;
        Ok(TextEncoder {
            plan,
            path,
            precision,
            context,
        })
    }

    /// The ONNX file this encoder runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of token ids per text.
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Embeds one tokenized text (`context_length()` ids); returns the raw embedding.
    pub fn encode(&self, ids: &[i64]) -> Result<Vec<f32>, ModelError> {
        if ids.len() != self.context {
            return Err(ModelError::Shape {
                path: self.path.clone(),
                message: format!(
                    "{} token ids given, the tower takes {}",
                    ids.len(),
                    self.context
                ),
            });
        }
        let input = Tensor::from_shape(&[1, self.context], ids).map_err(run_err(&self.path))?;
        let result = self
            .plan
            .run(tvec!(input.into()))
            .map_err(run_err(&self.path))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(run_err(&self.path))?;
        Ok(view.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

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
    /// [`build_plan`] does.
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
}

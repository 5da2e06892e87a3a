//! Turns a tower's ONNX file into a plan that runs: parse, type, declutter, then optimize for the
//! CPU or hand over to tract's CUDA runtime.
//!
//! Each tower is parsed, given a fixed input shape (batch 1), typed, decluttered (the decluttered
//! graph kept between starts by [`super::graph_cache`]), and turned into a plan once, at load
//! ([`build_batched`] makes the image tower's plan for any batch size, when asked). A
//! plan is `Send + Sync`: the daemon loads it on the main thread and runs it on the inference
//! thread.
//!
//! On the CPU the decluttered graph is optimized for this CPU. On a GPU (builds with the `cuda` or
//! `cuda-12060` feature, see [`super::device`]) the decluttered graph is handed to tract-cuda,
//! which moves every operator it has a kernel for to the GPU and leaves the others on the CPU.
//! The workarounds for tract's bugs that loading applies live in [`super::tract_fixes`].

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::graph_cache::{Cached, GraphCache};
use super::{Device, ModelError, dynamic_quant, int8_conv, tract_fixes};

/// A ready-to-run tower.
#[derive(Debug, Clone)]
pub(super) enum Plan {
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

    /// Runs the plan once; on the CPU in `slot`'s run state when given (an inference worker's
    /// own), else in the plan's. Workers share the plan (its weights) and differ only in state.
    pub(super) fn run_in(
        &self,
        slot: Option<&StateSlot>,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        match self {
            Plan::Cpu(plan, own) => {
                slot.unwrap_or(own)
                    .run(plan, inputs, tract_onnx::tract_core::plan::eval)
            }
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
pub(super) struct StateSlot(std::sync::Mutex<Option<TypedSimpleState>>);

impl StateSlot {
    /// Runs `plan` on `inputs` in the kept state, evaluating each node with `eval` (tract's
    /// `plan::eval`, or a wrapper around it that times each node).
    pub(super) fn run<E>(
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

/// The thread count [`set_threads`] last set (1 before it is called: tract's default executor
/// is single-threaded).
static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The thread count tract's matrix products use, as [`set_threads`] last set it.
pub(super) fn threads() -> usize {
    THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets how many threads tract's matrix products use, for every plan in the process.
///
/// `1` keeps everything on the calling thread (the right choice on a busy single board).
pub fn set_threads(threads: usize) {
    use tract_linalg::multithread::{Executor, set_default_executor};
    THREADS.store(threads.max(1), std::sync::atomic::Ordering::Relaxed);
    if threads <= 1 {
        set_default_executor(Executor::SingleThread);
    } else {
        set_default_executor(Executor::multithread(threads));
    }
}

/// The error of one stage of loading `path` (`what`), from tract's error.
fn graph_err(path: &Path, what: &str) -> impl FnOnce(anyhow::Error) -> ModelError + use<> {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |error: anyhow::Error| ModelError::Graph { path, what, error }
}

/// Builds the plan of the tower in `path` for `device`: its single input `input` pinned to
/// `input_fact`, only its `output` output kept. Returns the plan and the output's shape.
pub(super) fn build(
    device: Device,
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    match device {
        Device::Cpu => cpu_plan(path, input, input_fact, output),
        #[cfg(feature = "gpu-runtime")]
        Device::Cuda => cuda_plan(path, input, input_fact, output),
        #[cfg(not(feature = "gpu-runtime"))]
        Device::Cuda => Err(ModelError::Runtime {
            wanted: "cuda",
            reason: "this binary was built without CUDA".into(),
        }),
    }
}

/// A clock for the debug log of a load: each call returns the milliseconds since the last one.
fn stopwatch() -> impl FnMut() -> f64 {
    let mut last = std::time::Instant::now();
    move || {
        let now = std::time::Instant::now();
        let ms = (now - last).as_secs_f64() * 1e3;
        last = now;
        ms
    }
}

/// Parses `path`, pins its single input to `input_fact` and its output to `output`, and builds
/// the optimized CPU plan. Returns the plan and the output's shape.
fn cpu_plan(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    // Each stage's time at debug level (`RUST_LOG=edgeclip=debug`): where start-up goes.
    let started = std::time::Instant::now();
    let mut lap = stopwatch();
    let cache = GraphCache::for_file(path, &input_fact, output);
    let mut typed = decluttered_graph(path, input, input_fact, output, cache, &mut lap, true)?;
    typed
        .optimize()
        .map_err(graph_err(path, "optimizing the graph"))?;
    let optimize_ms = lap();
    let folded = tract_fixes::fold_constant_weight_sums(&mut typed)
        .map_err(graph_err(path, "folding weight sums"))?;
    if folded > 0 {
        log::debug!(
            "{}: {folded} integer weight sum(s) computed once at load",
            path.display()
        );
    }
    let replaced = dynamic_quant::replace_dynamic_quantizers(&mut typed);
    if replaced > 0 {
        log::debug!(
            "{}: {replaced} DynamicQuantizeLinear node(s) run by edgeclip's vector code",
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

/// Builds a CPU plan of the image tower in `path` that takes any batch: its input `input` pinned
/// to `[N, tail...]` where `N` is the batch axis the graph itself declares symbolic (the towers
/// the model tools export: `dynamic_axes` on axis 0), and its `output` checked to be `[N, dim]`.
///
/// One plan serves every batch size: tract resolves `N` from the input of each run, so there is
/// one copy of the weights, not one plan per size. `Ok(Err(reason))` when the graph cannot be
/// batched: its batch axis is fixed, or it quantizes its activations with a scale computed from
/// the whole input (`DynamicQuantizeLinear`, onnxruntime's dynamic int8), which would make one
/// image's embedding depend on the others of its batch. The caller then runs images one at a
/// time through the batch-1 plan.
pub(super) fn build_batched(
    path: &Path,
    input: &str,
    tail: [usize; 3],
    output: &str,
    dim: usize,
) -> Result<Result<Plan, String>, ModelError> {
    let proto = tract_fixes::onnx_parser()
        .proto_model_for_path(path)
        .map_err(graph_err(path, "parsing the ONNX file"))?;
    batched_from_proto(path, proto, input, tail, output, dim)
}

/// [`build_batched`] from the file's protobuf.
pub(super) fn batched_from_proto(
    path: &Path,
    proto: tract_onnx::pb::ModelProto,
    input: &str,
    tail: [usize; 3],
    output: &str,
    dim: usize,
) -> Result<Result<Plan, String>, ModelError> {
    if let Some(graph) = proto.graph.as_ref()
        && graph
            .node
            .iter()
            .any(|n| n.op_type == "DynamicQuantizeLinear")
    {
        return Ok(Err(
            "it quantizes activations with a scale taken from the whole batch (DynamicQuantizeLinear)"
                .into(),
        ));
    }
    let mut model = parse_proto(path, proto, true)?;
    let declared = model
        .input_fact(0)
        .map_err(graph_err(path, "reading the input"))?
        .clone();
    let batch = match declared.shape.dims().next().and_then(|d| d.concretize()) {
        Some(d @ TDim::Sym(_)) => d,
        other => {
            return Ok(Err(format!(
                "its batch axis is {}",
                other.map_or("not declared".to_string(), |d| format!("fixed at {d}"))
            )));
        }
    };
    let fact = f32::fact([
        batch.clone(),
        tail[0].into(),
        tail[1].into(),
        tail[2].into(),
    ]);
    check_declared_shape(
        path,
        input,
        &declared,
        &f32::fact([1, tail[0], tail[1], tail[2]]).into(),
    )?;
    set_io(&mut model, path, fact.into(), output)?;
    let mut typed = model
        .into_typed()
        .map_err(graph_err(path, "typing the batched graph"))?;
    typed
        .declutter()
        .map_err(graph_err(path, "simplifying the batched graph"))?;
    typed
        .optimize()
        .map_err(graph_err(path, "optimizing the batched graph"))?;
    tract_fixes::fold_constant_weight_sums(&mut typed)
        .map_err(graph_err(path, "folding weight sums"))?;
    let out = typed
        .output_fact(0)
        .map_err(graph_err(path, "reading the output"))?
        .shape
        .to_tvec();
    if out.len() != 2 || out[0] != batch || out[1] != TDim::from(dim) {
        return Ok(Err(format!(
            "its output is {out:?} for an input of {batch} images, not [{batch}, {dim}]"
        )));
    }
    let plan = typed
        .into_runnable()
        .map_err(graph_err(path, "building the batched execution plan"))?;
    Ok(Ok(Plan::cpu(plan)))
}

/// Like [`cpu_plan`], through tract's CUDA runtime: the decluttered graph (not the one
/// optimized for the CPU, whose operators tract-cuda does not translate) is prepared by
/// tract-cuda. The first preparation in a process creates the CUDA context, which compiles
/// tract-cuda's kernels unless they are cached (see [`super::device`]).
#[cfg(feature = "gpu-runtime")]
fn cuda_plan(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    use tract_onnx::tract_core::runtime::runtime_for_name;

    let unavailable = |reason: String| ModelError::Runtime {
        wanted: "cuda",
        reason,
    };
    // Not through the graph cache: tract-cuda was verified on graphs decluttered from ONNX, as
    // written (no `int8_conv` rewrite: tract-cuda was not tested on its quantized convolution).
    let typed = decluttered_graph(
        path,
        input,
        input_fact,
        output,
        None,
        &mut stopwatch(),
        false,
    )?;
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
    // panics when that fails: an error instead.
    let runnable = match tract_fixes::catch_cuda_panic(|| runtime.prepare(typed)) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(graph_err(path, "preparing the graph for CUDA")(e)),
        Err(panic) => {
            return Err(unavailable(format!(
                "tract's CUDA runtime failed to start: {panic}"
            )));
        }
    };
    Ok((Plan::Cuda(Arc::from(runnable)), out_shape))
}

/// Parses `path` (with the CPU's rewrites when `for_cpu`, see [`parse_proto`]), checks its
/// single input against the manifest, pins it to `input_fact` and keeps only the `output`
/// output.
fn load_graph(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
    for_cpu: bool,
) -> Result<InferenceModel, ModelError> {
    let proto = tract_fixes::onnx_parser()
        .proto_model_for_path(path)
        .map_err(graph_err(path, "parsing the ONNX file"))?;
    let mut model = parse_proto(path, proto, for_cpu)?;

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

    set_io(&mut model, path, input_fact, output)?;
    Ok(model)
}

/// Sets the graph's input shape and keeps only the output named `output`.
fn set_io(
    model: &mut InferenceModel,
    path: &Path,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(), ModelError> {
    model
        .set_input_fact(0, input_fact)
        .map_err(graph_err(path, "setting the input shape"))?;
    model
        .select_outputs_by_name([output])
        .map_err(|e| ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("no output named {output:?}: {e:#}"),
        })?;
    Ok(())
}

/// Turns the protobuf of `path` into tract's graph: the protobuf checks and rewrites of
/// [`tract_fixes`] first, and for a CPU plan (`for_cpu`) the integer convolutions fused into
/// `QLinearConv` ([`int8_conv`], unless [`int8_conv::FUSE_ENV`] is `off`), then tract's parser.
/// A malformed graph is an error naming the file (and the node where the rewrites find it), not
/// a panic.
fn parse_proto(
    path: &Path,
    mut proto: tract_onnx::pb::ModelProto,
    for_cpu: bool,
) -> Result<InferenceModel, ModelError> {
    if let Some(graph) = proto.graph.as_mut() {
        tract_fixes::check_graph_outputs(graph)
            .map_err(graph_err(path, "reading the ONNX graph"))?;
        let fixed = tract_fixes::unfold_quantized_softmax(graph)
            .map_err(graph_err(path, "reading the ONNX graph"))?;
        if fixed > 0 {
            log::debug!(
                "{}: {fixed} Softmax node(s) between DequantizeLinear and QuantizeLinear now read the float logits (tract 0.23 would fold them into a wrong lookup table)",
                path.display()
            );
        }
        if for_cpu && int8_conv::enabled() {
            let fused = int8_conv::fuse_integer_convs(graph);
            if fused > 0 {
                log::debug!(
                    "{}: {fused} integer convolution chain(s) (ConvInteger .. QuantizeLinear) loaded as QLinearConv",
                    path.display()
                );
            }
        }
    }
    let dir = path.parent().and_then(|d| d.to_str());
    let parsed = tract_fixes::onnx_parser()
        .parse(&proto, dir)
        .map_err(graph_err(path, "parsing the ONNX file"))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(graph_err(path, "parsing the ONNX file")(anyhow::anyhow!(
            "unresolved inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    Ok(parsed.model)
}

/// Checks a concrete input shape the graph declares against the one the bundle gives (the
/// batch axis aside).
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
/// tract cannot write it. `lap` times the stages for the debug log.
fn decluttered_graph(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
    cache: Option<GraphCache>,
    lap: &mut dyn FnMut() -> f64,
    for_cpu: bool,
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
    let model = load_graph(path, input, input_fact, output, for_cpu)?;
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

#[cfg(test)]
mod tests;

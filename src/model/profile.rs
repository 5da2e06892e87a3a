//! What an image tower's CPU plan runs and where its time goes: for finding out which kernels an
//! int8 graph really uses and what a graph spends its time on (`examples/onnx_probe.rs`).
//!
//! Kept apart from the run path ([`super::encoder`]): profiling runs the same plan and run state,
//! with a node evaluator that times each node.

use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

use super::ModelError;
use super::encoder::{ImageEncoder, run_err};
use super::plan::Plan;

impl ImageEncoder {
    /// What the optimized plan runs: one line per node, `op name: details`, where the details of
    /// a matrix product name the kernel tract picked (`OptMatMul ... with [avx2_mmm_i32_8x8]`).
    /// For finding out which kernels an int8 graph really uses.
    /// Empty for a plan on the GPU (tract-cuda's runnable does not expose its graph).
    pub fn plan_summary(&self) -> Vec<String> {
        match &self.tower.plan {
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
    ) -> Result<Vec<(String, Duration)>, ModelError> {
        let path = &self.tower.path;
        let (plan, slot) = match &self.tower.plan {
            Plan::Cpu(plan, slot) => (plan, slot),
            #[cfg(feature = "gpu-runtime")]
            Plan::Cuda(_) => {
                return Err(run_err(path)(anyhow::anyhow!("profiling needs a CPU plan")));
            }
        };
        let nodes = plan.model().nodes();
        let mut times = vec![Duration::ZERO; nodes.len()];
        let mut seen = vec![false; nodes.len()];
        let mut order = Vec::with_capacity(nodes.len());
        for _ in 0..iters {
            let input = Tensor::from_shape(&self.shape, pixels).map_err(run_err(path))?;
            slot.run(plan, tvec!(input.into()), |ctx, state, node, inputs| {
                let started = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
                times[node.id] += started.elapsed();
                if !std::mem::replace(&mut seen[node.id], true) {
                    order.push(node.id);
                }
                out
            })
            .map_err(run_err(path))?;
        }
        Ok(order
            .into_iter()
            .map(|id| (describe(&nodes[id]), times[id]))
            .collect())
    }
}

/// One node of an optimized plan as `op name: details` (a matrix product's details name the
/// kernel tract picked).
fn describe(node: &TypedNode) -> String {
    let info = node.op.info().unwrap_or_default().join("; ");
    format!("{}: {}", node.op.name(), info)
}

#[cfg(test)]
mod tests {
    use crate::model::{Bundle, ImageEncoder, Precision};
    use std::path::Path;

    /// The profile of the demo's fp32 tower names nodes of the plan summary, each once, and the
    /// same nodes in the same order over several runs.
    #[test]
    fn the_profile_times_the_nodes_the_summary_lists() {
        let bundle =
            Bundle::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo")).unwrap();
        let encoder = ImageEncoder::load(&bundle, Some(Precision::Fp32)).unwrap();
        let summary = encoder.plan_summary();
        assert!(!summary.is_empty());
        let pixels = vec![0.25f32; encoder.input_len()];
        let once = encoder.profile(&pixels, 1).unwrap();
        let twice = encoder.profile(&pixels, 2).unwrap();
        assert!(!once.is_empty() && once.len() <= summary.len());
        for (line, _) in &once {
            assert!(summary.contains(line), "{line} not in {summary:#?}");
        }
        let names = |p: &[(String, std::time::Duration)]| -> Vec<String> {
            p.iter().map(|(n, _)| n.clone()).collect()
        };
        assert_eq!(names(&once), names(&twice));
        // The encoder still runs after profiling, in the same run state.
        assert_eq!(encoder.encode(&pixels).unwrap().len(), encoder.dim());
    }
}

//! Runs a bundle's towers through tract.
//!
//! Each tower is parsed, given a fixed input shape (batch 1), typed, optimized and turned into a
//! plan once, at load. A plan is `Send + Sync`: the daemon loads it on the main thread and runs it
//! on the inference thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{Bundle, ModelError, Precision};

type Plan = Arc<TypedRunnableModel>;

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

/// Parses `path`, pins its single input to `input_fact` and its output to `output`, and builds
/// the optimized plan. Returns the plan and the output's shape.
fn build_plan(
    path: &Path,
    input: &str,
    input_fact: InferenceFact,
    output: &str,
) -> Result<(Plan, Vec<usize>), ModelError> {
    let graph_err = |what: &str| {
        let path = path.to_path_buf();
        let what = what.to_string();
        move |source: anyhow::Error| ModelError::Graph { path, what, source }
    };
    // Quantizers copy shape-inference results (`value_info`) with a symbolic batch into the graph;
    // they would clash with the fixed batch of 1 given below, and tract infers them anyway.
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)
        .map_err(graph_err("parsing the ONNX file"))?;

    let names: Vec<String> = model
        .input_outlets()
        .map_err(graph_err("listing inputs"))?
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
        .map_err(graph_err("reading the input"))?
        .clone();
    check_declared_shape(path, input, &declared, &input_fact)?;

    model
        .set_input_fact(0, input_fact)
        .map_err(graph_err("setting the input shape"))?;
    model
        .select_outputs_by_name([output])
        .map_err(|e| ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("no output named {output:?}: {e:#}"),
        })?;
    let typed = model
        .into_optimized()
        .map_err(graph_err("typing and optimizing the graph"))?;
    let out_shape = typed
        .output_fact(0)
        .map_err(graph_err("reading the output"))?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("output {output:?} has no fixed shape"),
        })?;
    let plan = typed
        .into_runnable()
        .map_err(graph_err("building the execution plan"))?;
    Ok((plan, out_shape))
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

/// The image tower of a bundle, ready to run on one `[1, 3, H, W]` tensor at a time.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    plan: Plan,
    path: PathBuf,
    precision: Precision,
    shape: [usize; 4],
    dim: usize,
}

impl ImageEncoder {
    /// Loads the bundle's image tower at `precision` (the default file when `None`).
    pub fn load(bundle: &Bundle, precision: Option<Precision>) -> Result<ImageEncoder, ModelError> {
        let (path, precision) = bundle.image_onnx(precision)?;
        let tower = &bundle.manifest.image;
        let shape = [1, 3, tower.height as usize, tower.width as usize];
        let fact = f32::fact(shape).into();
        let (plan, out) = build_plan(&path, &tower.input, fact, &tower.output)?;
        check_output(&path, &out, bundle.embed_dim())?;
        Ok(ImageEncoder {
            plan,
            path,
            precision,
            shape,
            dim: bundle.embed_dim(),
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

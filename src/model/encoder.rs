//! The public encoders: [`ImageEncoder`] and [`TextEncoder`], a bundle's two towers ready to run.
//!
//! Both load their tower through [`super::plan`] and run it through one path ([`Tower::run_into`]:
//! one input tensor in, the f32 output copied out); they differ only in what they check at load
//! and in the shape of their input. Where the image tower runs is [`super::device`]'s decision;
//! the encoder acts on it. The text tower always runs on the CPU (it runs once per prompt, and
//! is cached).

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use super::device::{self, Device};
use super::plan::{self, Plan, StateSlot};
use super::{Bundle, ModelError, Precision, Runtime, timing, tract_fixes};

/// A tower's plan with the file it came from: what both encoders run, through one path.
#[derive(Debug, Clone)]
pub(super) struct Tower {
    /// The plan.
    pub(super) plan: Plan,
    /// The ONNX file.
    pub(super) path: PathBuf,
    /// Its precision.
    precision: Precision,
}

impl Tower {
    /// Runs the plan on one input of `shape` holding `input`, and copies its single f32 output
    /// into `out`, which must be as long as the output.
    fn run_into<T: Datum + Copy>(
        &self,
        shape: &[usize],
        input: &[T],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        run_plan_into(&self.plan, None, &self.path, shape, input, out)
    }
}

/// Runs `plan` (in `slot`'s run state when given) on one input of `shape` holding `input`, and
/// copies its single f32 output into `out`, which must be as long as the output: the one run
/// path of both towers, batched or not.
pub(super) fn run_plan_into<T: Datum + Copy>(
    plan: &Plan,
    slot: Option<&StateSlot>,
    path: &Path,
    shape: &[usize],
    input: &[T],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let input = Tensor::from_shape(shape, input).map_err(run_err(path))?;
    let result = plan
        .run_in(slot, tvec!(input.into()))
        .map_err(run_err(path))?;
    let output = result
        .first()
        .ok_or_else(|| run_err(path)(anyhow::anyhow!("the graph has no output")))?;
    let view = output.to_plain_array_view::<f32>().map_err(run_err(path))?;
    let values = view
        .as_slice()
        .ok_or_else(|| run_err(path)(anyhow::anyhow!("output is not contiguous")))?;
    if values.len() != out.len() {
        return Err(run_err(path)(anyhow::anyhow!(
            "output has {} values, expected {}",
            values.len(),
            out.len()
        )));
    }
    out.copy_from_slice(values);
    Ok(())
}

/// The error of a failed run of the tower in `path`.
pub(super) fn run_err(path: &Path) -> impl FnOnce(anyhow::Error) -> ModelError + '_ {
    move |error| ModelError::Graph {
        path: path.to_path_buf(),
        what: "running the graph".into(),
        error,
    }
}

/// Checks that a tower's output is the `[1, dim]` the bundle's `embed_dim` says.
fn check_output(path: &Path, shape: &[usize], dim: usize) -> Result<(), ModelError> {
    if shape != [1, dim] {
        return Err(ModelError::Shape {
            path: path.to_path_buf(),
            message: format!("output shape is {shape:?}, the bundle's embed_dim says [1, {dim}]"),
        });
    }
    Ok(())
}

/// The image tower of a bundle, ready to run on one `[1, 3, H, W]` tensor at a time, or on a
/// batch of them ([`ImageEncoder::encode_batch_into`], `model/batch.rs`).
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    pub(super) tower: Tower,
    device: Device,
    pub(super) shape: [usize; 4],
    dim: usize,
    /// The graph's input and output names.
    pub(super) io: (String, String),
    /// The plan for any batch size (`[N, 3, H, W]`) when one-call batches are on and the graph
    /// can take them ([`plan::build_batched`]); `Err` says why there is none. Off at load: on
    /// the CPU image by image is faster (see `model/batch.rs`).
    pub(super) batched: Result<Plan, String>,
    /// The run states of inference workers 1.. (worker 0 runs in the plans' own): one for the
    /// batch-1 plan, one for the batched plan. Its length + 1 is the number of workers.
    pub(super) worker_states: Vec<[StateSlot; 2]>,
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
            && let Some(why) = device::slow_on_cpu(precision, device::cpu_has_int8_dot())
        {
            log::warn!(
                "image tower {} ({precision}) will be slow on this CPU: {why}",
                path.display()
            );
        }
        let image = &bundle.manifest.image;
        let shape = [1, 3, image.height as usize, image.width as usize];
        let fact = f32::fact(shape).into();
        let (plan, out) = plan::build(device, &path, &image.input, fact, &image.output)?;
        check_output(&path, &out, bundle.embed_dim())?;
        let encoder = ImageEncoder {
            tower: Tower {
                plan,
                path,
                precision,
            },
            device,
            shape,
            dim: bundle.embed_dim(),
            io: (image.input.clone(), image.output.clone()),
            batched: Err(ONE_CALL_OFF.into()),
            worker_states: Vec::new(),
        };
        if device != Device::Cpu {
            encoder.first_run()?;
        }
        Ok(encoder)
    }

    /// Loads the bundle's image tower where `runtime` (`model.runtime`, `--runtime`) says, and
    /// logs where and why ([`device::select`]). When the tower fails to load on the device
    /// chosen, [`device::fallback`] says whether to try the CPU instead (with `auto`, a GPU that
    /// is found but cannot run the tower: tract-cuda failing to start, say), which is logged.
    pub fn load_for(
        bundle: &Bundle,
        precision: Option<Precision>,
        runtime: Runtime,
    ) -> Result<ImageEncoder, ModelError> {
        let selection = device::select(runtime)?;
        log::info!(
            "runtime {runtime}: the image tower runs on the {} ({})",
            selection.device.label(),
            selection.reason
        );
        let precision = match (precision, selection.device) {
            (None, Device::Cpu) if timing::enabled() => {
                ImageEncoder::timed_cpu_precision(bundle, false).map(|choice| {
                    match &choice.cached {
                        Some(file) => log::info!(
                            "image tower: the {} file, the fastest when timed on this CPU ({}; cached in {})",
                            choice.precision,
                            choice.summary(),
                            file.display()
                        ),
                        None => log::info!("image tower: {}", choice.summary()),
                    }
                    choice.precision
                })
            }
            _ => precision,
        };
        match ImageEncoder::load_on(bundle, precision, selection.device) {
            Err(e) => match device::fallback(runtime, selection.device) {
                Some(fallback) => {
                    log::warn!(
                        "{}, using the {} instead: {e}",
                        fallback.reason,
                        fallback.device.label()
                    );
                    ImageEncoder::load_on(bundle, precision, fallback.device)
                }
                None => Err(e),
            },
            loaded => loaded,
        }
    }

    /// The CPU's image-tower precision chosen by timing the files the bundle ships
    /// ([`timing::choose`]: the cached choice for this bundle, CPU and thread count unless
    /// `retime`), or `None` where the flag-based choice stands.
    pub fn timed_cpu_precision(bundle: &Bundle, retime: bool) -> Option<timing::Choice> {
        let cache = crate::paths::precision_cache_dir();
        timing::choose(
            bundle,
            cache.as_deref(),
            plan::threads(),
            retime,
            |precision, budget| {
                let encoder = ImageEncoder::load_on(bundle, Some(precision), Device::Cpu)?;
                let pixels = timing_image(encoder.input_len());
                let mut out = vec![0f32; encoder.dim];
                timing::time_runs(precision, budget, || encoder.encode_into(&pixels, &mut out))
            },
        )
    }

    /// One run on a blank image, panics (tract-cuda creates a thread's CUDA stream and library
    /// handles on its first run there, and panics when that fails) turned into errors.
    fn first_run(&self) -> Result<(), ModelError> {
        let pixels = vec![0f32; self.input_len()];
        let mut out = vec![0f32; self.dim];
        match tract_fixes::catch_cuda_panic(|| self.encode_into(&pixels, &mut out)) {
            Ok(result) => result,
            Err(_) => Err(ModelError::Runtime {
                wanted: self.device.as_str(),
                reason: format!(
                    "{}: the first run on the device panicked (see the message above)",
                    self.tower.path.display()
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
        let fact = f32::fact(shape).into();
        let (plan, out) = plan::build(Device::Cpu, path, input, fact, output)?;
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
            tower: Tower {
                plan,
                path: path.to_path_buf(),
                precision,
            },
            shape,
            dim,
            device: Device::Cpu,
            io: (input.to_string(), output.to_string()),
            batched: Err(ONE_CALL_OFF.into()),
            worker_states: Vec::new(),
        })
    }

    /// The ONNX file this encoder runs.
    pub fn path(&self) -> &Path {
        &self.tower.path
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        self.tower.precision
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
                path: self.tower.path.clone(),
                message: format!(
                    "encode called with {} input values and room for {} outputs, expected {} and {}",
                    pixels.len(),
                    out.len(),
                    self.input_len(),
                    self.dim
                ),
            });
        }
        self.tower.run_into(&self.shape, pixels, out)
    }

    /// Like [`ImageEncoder::encode_into`], returning a new vector.
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0.0; self.dim];
        self.encode_into(pixels, &mut out)?;
        Ok(out)
    }
}

/// A fixed pseudo-random image in about -2..2 (the range of normalised pixels), for timing: a
/// blank one would give dynamic int8 an empty range.
fn timing_image(len: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// Why an encoder has no plan for one-call batches when they were not asked for.
pub(super) const ONE_CALL_OFF: &str = "one-call batches are off";

/// The text tower of a bundle, run on one tokenized text at a time.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tower: Tower,
    context: usize,
    dim: usize,
}

impl TextEncoder {
    /// Loads the bundle's text tower at `precision` (the default file when `None`).
    pub fn load(bundle: &Bundle, precision: Option<Precision>) -> Result<TextEncoder, ModelError> {
        let (path, precision) = bundle.text_onnx(precision)?;
        let text = bundle
            .manifest
            .text
            .as_ref()
            .ok_or_else(|| ModelError::NoTextTower {
                path: bundle.manifest_path(),
            })?;
        let context = text.context_length;
        let fact = i64::fact([1, context]).into();
        let (plan, out) = plan::build(Device::Cpu, &path, &text.input, fact, &text.output)?;
        check_output(&path, &out, bundle.embed_dim())?;
        Ok(TextEncoder {
            tower: Tower {
                plan,
                path,
                precision,
            },
            context,
            dim: bundle.embed_dim(),
        })
    }

    /// The ONNX file this encoder runs.
    pub fn path(&self) -> &Path {
        &self.tower.path
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        self.tower.precision
    }

    /// Number of token ids per text.
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Embeds one tokenized text (`context_length()` ids); returns the raw embedding.
    pub fn encode(&self, ids: &[i64]) -> Result<Vec<f32>, ModelError> {
        if ids.len() != self.context {
            return Err(ModelError::Shape {
                path: self.tower.path.clone(),
                message: format!(
                    "{} token ids given, the tower takes {}",
                    ids.len(),
                    self.context
                ),
            });
        }
        let mut out = vec![0.0; self.dim];
        self.tower.run_into(&[1, self.context], ids, &mut out)?;
        Ok(out)
    }
}

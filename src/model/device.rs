//! Where the image tower runs: tract's CPU runtime, or tract's CUDA runtime (the `tract-cuda`
//! crate) in builds with the `cuda` (CUDA 13.0) or `cuda-12060` (CUDA 12.6) feature.
//!
//! `model.runtime = "auto"` takes the GPU when the CUDA driver and CUDA's libraries load, and the
//! CPU otherwise; `"cuda"` turns their absence into an error at start-up. [`select`] returns the
//! decision with its reason, for the caller to log.
//!
//! tract-cuda compiles its kernels with NVRTC when it first creates a CUDA context (71 s on an
//! H100) and keeps the cubins on disk, under a folder it derives once per process from
//! `$XDG_CACHE_HOME` (or `~/.cache`): `<that>/tract/<tract version>/cuda/<API level>/cubins/
//! sm_<arch>/nvrtc-<version>/` (tract-cuda 0.23.9, `src/kernels/mod.rs` `cubin_dir`, and
//! `src/context.rs` `TractCudaContext::new`). A cubin found there is loaded, not compiled again.
//! edgeclip points that folder at its own cache ([`kernel_cache_base`]: `model.kernel_cache`, else
//! the daemon's cache folder, `/var/cache/edgeclip` under systemd) by setting
//! [`KERNEL_CACHE_ENV`] while the folder is computed, at the start of `main` (see `main.rs`), and
//! `edgeclip warmup` fills it at install time.

use std::path::{Path, PathBuf};

use crate::config::Runtime;

use super::{ModelError, Precision};

/// The environment variable tract-cuda derives its kernel folder from.
pub const KERNEL_CACHE_ENV: &str = "XDG_CACHE_HOME";

/// Whether this binary was built with tract's CUDA runtime.
pub const CUDA_BUILT: bool = cfg!(feature = "gpu-runtime");

/// The CUDA API level this binary was built for (`"13.0"`, `"12.6"`), if any.
pub const CUDA_API: Option<&str> = if cfg!(feature = "cuda-13000") {
    Some("13.0")
} else if cfg!(feature = "cuda-12060") {
    Some("12.6")
} else {
    None
};

/// Where a tower runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// tract's CPU runtime (the default plan: typed, optimized for the CPU).
    Cpu,
    /// tract's CUDA runtime on GPU 0. Operators tract-cuda has no kernel for stay on the CPU.
    Cuda,
}

impl Device {
    /// `"cpu"` or `"cuda"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// The precision to load when none is asked for, given what the image tower is shipped in
    /// (the default first, as [`super::Bundle::image_precisions`] lists them). `None` means the
    /// bundle's default file.
    ///
    /// The CPU takes the default (int8 for the shipped bundles). A GPU takes an fp16 variant,
    /// else an fp32 one: tract-cuda runs float graphs on the GPU, but has no kernels for the
    /// int8 operators (QuantizeLinear/DequantizeLinear, MatMulInteger), which would run on the
    /// CPU with a copy to and from the GPU around each of them.
    pub fn pick_precision(self, available: &[Precision]) -> Option<Precision> {
        match self {
            Device::Cpu => None,
            Device::Cuda => [Precision::Fp16, Precision::Fp32]
                .into_iter()
                .find(|p| available.contains(p)),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The device chosen for a `model.runtime` value, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Where the image tower will run.
    pub device: Device,
    /// Why, in words: "the CUDA driver and libraries loaded", "this binary was built without
    /// CUDA", the loader's error.
    pub reason: String,
}

/// Chooses the device for `wanted`, loading the CUDA driver and libraries to see whether they
/// are there (nothing else is touched: no context is created, no kernel compiled).
pub fn select(wanted: Runtime) -> Result<Selection, ModelError> {
    decide(wanted, CUDA_BUILT, cuda_probe)
}

const REBUILD: &str = "rebuild with `--features cuda` (CUDA 13.0: JetPack 7, x86-64 GPUs) or \
                       `--features cuda-12060` (CUDA 12.6: JetPack 6)";

/// The decision itself, with the probe passed in (so it is tested without a GPU).
fn decide(
    wanted: Runtime,
    built: bool,
    probe: impl FnOnce() -> Result<String, String>,
) -> Result<Selection, ModelError> {
    let unavailable = |reason: String| ModelError::Runtime {
        wanted: wanted.as_str(),
        reason,
    };
    match (wanted, built) {
        (Runtime::Cpu, _) => Ok(Selection {
            device: Device::Cpu,
            reason: "the CPU was asked for".into(),
        }),
        (Runtime::Auto, false) => Ok(Selection {
            device: Device::Cpu,
            reason: "this binary was built without CUDA".into(),
        }),
        (Runtime::Cuda, false) => Err(unavailable(format!(
            "this binary was built without CUDA; {REBUILD}"
        ))),
        (_, true) => match probe() {
            Ok(reason) => Ok(Selection {
                device: Device::Cuda,
                reason,
            }),
            Err(e) if wanted == Runtime::Auto => Ok(Selection {
                device: Device::Cpu,
                reason: format!("CUDA is not usable: {e}"),
            }),
            Err(e) => Err(unavailable(format!("CUDA is not usable: {e}"))),
        },
    }
}

#[cfg(feature = "gpu-runtime")]
fn cuda_probe() -> Result<String, String> {
    // Loads libcuda (checking that the driver's API level is at least the one built for) and
    // dlopens cudart, nvrtc, cublas and cudnn: tract-cuda's own check (`src/utils.rs`,
    // `ensure_cuda_runtime_dependencies`). It creates no context.
    match tract_onnx::tract_core::runtime::runtime_for_name("cuda") {
        Ok(Some(_)) => Ok(format!(
            "the CUDA driver and libraries loaded (built for CUDA {})",
            CUDA_API.unwrap_or("?")
        )),
        Ok(None) => Err("tract's CUDA runtime is not registered in this binary".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

#[cfg(not(feature = "gpu-runtime"))]
fn cuda_probe() -> Result<String, String> {
    Err("this binary was built without CUDA".into())
}

/// The folder whose `tract/...` subfolder holds the compiled GPU kernels: `configured`
/// (`model.kernel_cache`, `--kernel-cache`), else the daemon's cache folder
/// ([`crate::daemon::cache_dir`]). Made absolute: tract-cuda ignores a relative
/// `XDG_CACHE_HOME`. `None` when neither is known (no `$HOME`, no `$CACHE_DIRECTORY`).
pub fn kernel_cache_base(configured: Option<&Path>) -> Option<PathBuf> {
    let dir = configured
        .map(Path::to_path_buf)
        .or_else(crate::daemon::cache_dir)?;
    if dir.is_absolute() {
        Some(dir)
    } else {
        std::env::current_dir().ok().map(|cwd| cwd.join(dir))
    }
}

/// The folder tract-cuda keeps compiled kernels in for this binary's CUDA API level (the
/// GPU's architecture and NVRTC's version add two levels below it). The first call fixes it for
/// the whole process, from [`KERNEL_CACHE_ENV`] as it is at that moment. `None` without CUDA.
pub fn kernel_dir() -> Option<PathBuf> {
    #[cfg(feature = "gpu-runtime")]
    {
        Some(tract_cuda::kernels::cubin_dir().to_path_buf())
    }
    #[cfg(not(feature = "gpu-runtime"))]
    {
        None
    }
}

/// How many compiled kernel libraries (`.cubin` files) are under `dir`, at any depth.
pub fn count_kernels(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                count_kernels(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "cubin"))
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn works() -> Result<String, String> {
        Ok("loaded".into())
    }

    fn fails() -> Result<String, String> {
        Err("libcuda.so.1: cannot open shared object file".into())
    }

    #[test]
    fn cpu_is_always_the_cpu() {
        for built in [false, true] {
            let s = decide(Runtime::Cpu, built, works).unwrap();
            assert_eq!(s.device, Device::Cpu);
        }
    }

    #[test]
    fn auto_takes_the_gpu_only_when_cuda_loads() {
        let s = decide(Runtime::Auto, true, works).unwrap();
        assert_eq!((s.device, s.reason.as_str()), (Device::Cuda, "loaded"));
        let s = decide(Runtime::Auto, true, fails).unwrap();
        assert_eq!(s.device, Device::Cpu);
        assert!(s.reason.contains("libcuda.so.1"), "{}", s.reason);
        let s = decide(Runtime::Auto, false, || panic!("no probe without CUDA")).unwrap();
        assert_eq!(s.device, Device::Cpu);
        assert!(s.reason.contains("built without CUDA"), "{}", s.reason);
    }

    #[test]
    fn cuda_is_an_error_when_unavailable() {
        let e = decide(Runtime::Cuda, false, works).unwrap_err().to_string();
        assert!(e.contains("built without CUDA"), "{e}");
        assert!(e.contains("--features cuda"), "{e}");
        let e = decide(Runtime::Cuda, true, fails).unwrap_err().to_string();
        assert!(e.contains("\"cuda\""), "{e}");
        assert!(e.contains("libcuda.so.1"), "{e}");
        let s = decide(Runtime::Cuda, true, works).unwrap();
        assert_eq!(s.device, Device::Cuda);
    }

    #[test]
    fn the_gpu_prefers_fp16_then_fp32_over_int8() {
        use Precision::*;
        assert_eq!(Device::Cpu.pick_precision(&[Int8Qdq, Fp32, Fp16]), None);
        assert_eq!(
            Device::Cuda.pick_precision(&[Int8Qdq, Fp32, Fp16]),
            Some(Fp16)
        );
        assert_eq!(Device::Cuda.pick_precision(&[Int8Qdq, Fp32]), Some(Fp32));
        assert_eq!(Device::Cuda.pick_precision(&[Fp32]), Some(Fp32));
        assert_eq!(Device::Cuda.pick_precision(&[Int8Dynamic]), None);
    }

    #[test]
    fn kernels_are_counted_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("sm_87/nvrtc-12.6");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("nn_1.cubin"), b"x").unwrap();
        std::fs::write(deep.join("nn_1.0123.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join("binary_2.cubin"), b"x").unwrap();
        assert_eq!(count_kernels(dir.path()), 2);
        assert_eq!(count_kernels(&dir.path().join("missing")), 0);
    }

    #[test]
    fn the_kernel_cache_is_absolute() {
        let base = kernel_cache_base(Some(Path::new("rel/cache"))).unwrap();
        assert!(
            base.is_absolute() && base.ends_with("rel/cache"),
            "{base:?}"
        );
        let abs = kernel_cache_base(Some(Path::new("/var/cache/edgeclip"))).unwrap();
        assert_eq!(abs, PathBuf::from("/var/cache/edgeclip"));
    }
}

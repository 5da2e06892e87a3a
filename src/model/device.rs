//! Where the image tower runs: tract's CPU runtime, or tract's CUDA runtime (the `tract-cuda`
//! crate) in builds with the `cuda` (CUDA 13.0) or `cuda-12060` (CUDA 12.6) feature.
//!
//! `model.runtime = "auto"` takes the GPU when the CUDA driver and CUDA's libraries load, and the
//! CPU otherwise; `"cuda"` turns their absence into an error at start-up. [`select`] returns the
//! decision with its reason, for the caller to log. When the tower then fails to load on the GPU,
//! [`fallback`] decides whether to try the CPU instead (`auto` does); the encoder acts on it.
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

use super::ModelError;
use super::options::{Precision, Runtime};

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

    /// Its name in a sentence of the log: `"CPU"` or `"GPU (CUDA)"`.
    pub fn label(self) -> &'static str {
        match self {
            Device::Cpu => "CPU",
            Device::Cuda => "GPU (CUDA)",
        }
    }

    /// The precision to load when none is asked for, given what the image tower is shipped in
    /// (the default first, as [`super::Bundle::image_precisions`] lists them), with the reason.
    /// `None` means the bundle's default file.
    ///
    /// A GPU takes an fp16 variant, else an fp32 one: tract-cuda runs float graphs on the GPU,
    /// but has no kernels for the int8 operators (QuantizeLinear/DequantizeLinear,
    /// MatMulInteger), which would run on the CPU with a copy to and from the GPU around each of
    /// them. The CPU: [`pick_cpu_precision`], for what this CPU has ([`cpu_has_int8_dot`]).
    pub fn pick_precision(self, available: &[Precision]) -> (Option<Precision>, &'static str) {
        match self {
            Device::Cpu => pick_cpu_precision(available, cpu_has_int8_dot()),
            Device::Cuda => match [Precision::Fp16, Precision::Fp32]
                .into_iter()
                .find(|p| available.contains(p))
            {
                Some(p) => (
                    Some(p),
                    "a GPU runs float graphs; int8 operators have no CUDA kernels",
                ),
                None => (None, "the bundle ships no float image tower"),
            },
        }
    }
}

/// Why integer-kernel int8 is not run on a CPU without int8 dot products
/// ([`pick_cpu_precision`], [`slow_on_cpu`]).
const SLOW_INT8: &str = "the CPU has no int8 dot-product instructions, so tract's int8 kernels are slower than fp32 here (many times slower on x86-64 without VNNI)";
/// Why an fp16 file is not run on the CPU.
const SLOW_FP16: &str = "tract's CPU kernels have no native fp16 arithmetic";

/// What the CPU runs when `model.precision` is not set, among the files a bundle ships (the
/// default first), and why. `None`: the bundle's default file.
///
/// The rule follows what tract 0.23.9 does with each form (measured in `benches/INT8.md`):
/// - **dynamic int8** (MatMulInteger, ConvInteger) runs tract's integer kernels, which beat fp32
///   only where the CPU has int8 dot-product instructions (`int8_dot`: Arm's `dotprod`, x86's
///   VNNI): ViT-B/32 takes 0.40x fp32's instructions on a Cortex-A76 but 1.15x on an A72, and
///   0.70x fp32's time on this x86 (AMX). So dynamic int8 where `int8_dot`, else fp32 when the
///   bundle ships it. **Static int8 on integer kernels** (`int8-static`: the same products fed
///   by calibrated QuantizeLinear nodes) follows the same rule, and is taken before a dynamic
///   file when both are shipped (no per-frame range reductions: the demo student, 0.89x fp32's
///   A76 instructions, against 0.98x for its dynamic form, part E of `benches/INT8.md`).
/// - **QDQ int8** runs in float in tract (the weights are dequantized at load, and every
///   QuantizeLinear/DequantizeLinear pair on the activations is a rounding pass on top: 27% of
///   the demo student's time), so it is never faster than the fp32 file: dynamic int8 where
///   `int8_dot` and shipped, else fp32 when shipped.
/// - **fp16** has no native arithmetic in tract's CPU kernels (5.4 s per frame for the demo):
///   fp32, else int8, when shipped.
/// - **fp32**: integer-kernel int8 where `int8_dot` and shipped.
pub fn pick_cpu_precision(
    available: &[Precision],
    int8_dot: bool,
) -> (Option<Precision>, &'static str) {
    use Precision::*;
    let has = |p| available.contains(&p);
    let Some(&default) = available.first() else {
        return (None, "the bundle's default file");
    };
    let integer = [Int8Static, Int8Dynamic]
        .into_iter()
        .find(|&p| int8_dot && has(p));
    match default {
        d if d.on_integer_kernels() && int8_dot => {
            (None, "the CPU has int8 dot-product instructions")
        }
        d if d.on_integer_kernels() && has(Fp32) => (Some(Fp32), SLOW_INT8),
        _ if integer.is_some() => (
            integer,
            "the CPU has int8 dot-product instructions for the integer-kernel int8 file",
        ),
        Int8Qdq if has(Fp32) => (
            Some(Fp32),
            "tract runs QDQ int8 graphs in float, with a rounding pass per quantized tensor: fp32 is faster",
        ),
        Fp16 if has(Fp32) => (Some(Fp32), SLOW_FP16),
        _ => (None, "the bundle's default file"),
    }
}

/// Why running `precision` on this CPU will be slow, when it will (for a warning at load time,
/// where the file was asked for by `model.precision` / `--precision` or is the only one shipped):
/// - **int8 on integer kernels (dynamic or static) without int8 dot products**: tract's integer
///   kernels cost more than fp32.
///   On an Arm core without `dotprod` (the Pi 4's A72) 1.15-1.5x fp32's instructions; on an
///   x86-64 without VNNI far more: `avx2_mmm_i32_8x8` reads each 8 bytes of weights with a
///   legacy-SSE `movq` between AVX instructions, which cost about 120 ns a step on the AMD EPYC
///   (Zen 3, virtualised) the project builds on, so the demo student took 178 ms per frame
///   instead of fp32's 2-4 ms (`benches/INT8.md` part D).
/// - **fp16**: tract's CPU kernels have no native fp16 arithmetic (5.4 s per frame for the demo).
pub fn slow_on_cpu(precision: Precision, int8_dot: bool) -> Option<&'static str> {
    match precision {
        p if p.on_integer_kernels() && !int8_dot => Some(SLOW_INT8),
        Precision::Fp16 => Some(SLOW_FP16),
        _ => None,
    }
}

/// Whether this CPU has int8 dot-product instructions that tract's int8 matrix kernels use:
/// `dotprod` on 64-bit Arm (Cortex-A55/A76 and later: Raspberry Pi 5, Jetson Orin; not the
/// Pi 4's A72), VNNI on x86-64 (AVX-512 VNNI or AVX-VNNI). `EDGECLIP_INT8_DOT=0|1` overrides
/// the detection (for tests and for comparing on one machine).
pub fn cpu_has_int8_dot() -> bool {
    match std::env::var("EDGECLIP_INT8_DOT").as_deref() {
        Ok("0") => return false,
        Ok("1") => return true,
        _ => {}
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
    {
        false
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

/// Where the image tower goes when it failed to load on `failed`, the device [`select`] chose
/// for `wanted`: with `auto`, a GPU that was found but cannot run the tower (tract-cuda failing
/// to start, a graph it cannot prepare) gives way to the CPU, with the reason for the log;
/// otherwise (`None`) the error stands: `cuda` was asked for, or the CPU itself failed.
pub fn fallback(wanted: Runtime, failed: Device) -> Option<Selection> {
    match (wanted, failed) {
        (Runtime::Auto, Device::Cuda) => Some(Selection {
            device: Device::Cpu,
            reason: "the GPU cannot run the image tower".into(),
        }),
        (Runtime::Auto | Runtime::Cpu | Runtime::Cuda, Device::Cpu | Device::Cuda) => None,
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
/// ([`crate::paths::cache_dir`]). Made absolute: tract-cuda ignores a relative
/// `XDG_CACHE_HOME`. `None` when neither is known (no `$HOME`, no `$CACHE_DIRECTORY`).
pub fn kernel_cache_base(configured: Option<&Path>) -> Option<PathBuf> {
    let dir = configured
        .map(Path::to_path_buf)
        .or_else(crate::paths::cache_dir)?;
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
    fn only_auto_falls_back_and_only_from_the_gpu() {
        let s = fallback(Runtime::Auto, Device::Cuda).unwrap();
        assert_eq!(s.device, Device::Cpu);
        // The warning the encoder logs before loading the tower again on the CPU.
        assert_eq!(
            format!("{}, using the {} instead", s.reason, s.device.label()),
            "the GPU cannot run the image tower, using the CPU instead"
        );
        // `cuda` was asked for: its failure is the answer.
        assert_eq!(fallback(Runtime::Cuda, Device::Cuda), None);
        // Nothing is left to fall back to from the CPU.
        for wanted in [Runtime::Auto, Runtime::Cpu, Runtime::Cuda] {
            assert_eq!(fallback(wanted, Device::Cpu), None);
        }
    }

    #[test]
    fn devices_are_named_for_the_log() {
        assert_eq!(Device::Cpu.label(), "CPU");
        assert_eq!(Device::Cuda.label(), "GPU (CUDA)");
    }

    #[test]
    fn the_gpu_prefers_fp16_then_fp32_over_int8() {
        use Precision::*;
        let gpu = |a: &[Precision]| Device::Cuda.pick_precision(a).0;
        assert_eq!(gpu(&[Int8Qdq, Fp32, Fp16]), Some(Fp16));
        assert_eq!(gpu(&[Int8Qdq, Fp32]), Some(Fp32));
        assert_eq!(gpu(&[Fp32]), Some(Fp32));
        assert_eq!(gpu(&[Int8Dynamic]), None);
    }

    #[test]
    fn the_cpu_takes_int8_only_where_it_has_int8_dot_products() {
        use Precision::*;
        let cpu = |a: &[Precision], dot| pick_cpu_precision(a, dot).0;
        for dot in [false, true] {
            // QDQ runs in float in tract: the fp32 file whenever it is shipped (the demo bundle).
            assert_eq!(cpu(&[Int8Qdq, Fp32, Fp16], dot), Some(Fp32));
            // A bundle with one file runs it.
            for only in [Int8Qdq, Int8Dynamic, Fp32, Fp16] {
                assert_eq!(cpu(&[only], dot), None);
            }
            assert_eq!(cpu(&[], dot), None);
        }
        // Dynamic int8 where the CPU has dot products, else fp32.
        assert_eq!(cpu(&[Int8Dynamic, Fp32], true), None);
        assert_eq!(cpu(&[Int8Dynamic, Fp32], false), Some(Fp32));
        assert_eq!(cpu(&[Fp32, Int8Dynamic, Int8Qdq], true), Some(Int8Dynamic));
        assert_eq!(cpu(&[Fp32, Int8Dynamic, Int8Qdq], false), None);
        assert_eq!(cpu(&[Int8Qdq, Int8Dynamic], true), Some(Int8Dynamic));
        assert_eq!(cpu(&[Int8Qdq, Int8Dynamic], false), None);
        assert_eq!(cpu(&[Int8Qdq, Fp32, Int8Dynamic], true), Some(Int8Dynamic));
        assert_eq!(cpu(&[Int8Qdq, Fp32, Int8Dynamic], false), Some(Fp32));
        // fp16 as the default: fp32 when shipped.
        assert_eq!(cpu(&[Fp16, Fp32], false), Some(Fp32));
        assert_eq!(cpu(&[Fp16, Int8Dynamic], true), Some(Int8Dynamic));
        // Static int8 on integer kernels: the same rule, and before a dynamic file.
        assert_eq!(cpu(&[Int8Static, Fp32, Fp16], true), None);
        assert_eq!(cpu(&[Int8Static, Fp32, Fp16], false), Some(Fp32));
        assert_eq!(cpu(&[Int8Static], false), None);
        assert_eq!(
            cpu(&[Fp32, Int8Dynamic, Int8Static], true),
            Some(Int8Static)
        );
        assert_eq!(cpu(&[Fp32, Int8Dynamic, Int8Static], false), None);
        assert_eq!(cpu(&[Int8Qdq, Int8Static, Fp32], true), Some(Int8Static));
        assert_eq!(cpu(&[Int8Qdq, Int8Static, Fp32], false), Some(Fp32));
    }

    #[test]
    fn slow_forms_are_named_only_where_they_are_slow() {
        use Precision::*;
        assert!(
            slow_on_cpu(Int8Dynamic, false)
                .unwrap()
                .contains("dot-product")
        );
        assert_eq!(slow_on_cpu(Int8Dynamic, true), None);
        assert!(
            slow_on_cpu(Int8Static, false)
                .unwrap()
                .contains("dot-product")
        );
        assert_eq!(slow_on_cpu(Int8Static, true), None);
        for dot in [false, true] {
            assert!(slow_on_cpu(Fp16, dot).unwrap().contains("fp16"));
            assert_eq!(slow_on_cpu(Fp32, dot), None);
            assert_eq!(slow_on_cpu(Int8Qdq, dot), None);
        }
    }

    /// What [`cpu_has_int8_dot`] finds on the core `cross/test-arm.sh` emulates, which names the
    /// right answer in `EDGECLIP_EXPECT_INT8_DOT`: 1 on a Cortex-A76, 0 on an A72, an A53 and the
    /// 32-bit A7. Ignored in a plain `cargo test`, where nobody says what the CPU should have.
    #[test]
    #[ignore = "run by cross/test-arm.sh under qemu, which names the emulated core's answer"]
    fn int8_dot_detection_matches_the_emulated_core() {
        let expected = std::env::var("EDGECLIP_EXPECT_INT8_DOT").expect("EDGECLIP_EXPECT_INT8_DOT");
        assert!(
            std::env::var_os("EDGECLIP_INT8_DOT").is_none(),
            "the override is set"
        );
        assert_eq!(cpu_has_int8_dot(), expected == "1", "expected {expected}");
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

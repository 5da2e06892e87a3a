//! The GPU path (tract's CUDA runtime, cargo feature `cuda` or `cuda-12060`) and the choice of
//! device.
//!
//! Tests without `#[ignore]` run everywhere, CI included (no GPU there): how `model.runtime` is
//! resolved, its errors, `auto` falling back to the CPU when no CUDA driver loads, the fp16
//! variant under tract. The tests marked `#[ignore = "needs a CUDA GPU: ..."]` need one; they are
//! run, with `--ignored`, by `benches/gpu/run.sh` on a machine that has one (see
//! `benches/README.md`). Extra bundles for them (the full-size ViT-B/32) come in
//! `EDGECLIP_GPU_BUNDLES`, folders separated by `:`.

mod common;

use std::path::PathBuf;

use edgeclip::config::Config;
use edgeclip::daemon::Daemon;
use edgeclip::model::{Bundle, Device, ImageEncoder, Precision, Runtime, device};
use edgeclip::preprocess::{Preprocessor, Spec, load_image};

fn demo() -> Bundle {
    Bundle::load(common::root().join("models/demo")).unwrap()
}

fn demo_config(runtime: Runtime) -> Config {
    let mut config = Config::from_file(common::root().join("firmware-config/demo.toml")).unwrap();
    config.model.runtime = runtime;
    common::without_snapshots(config)
}

/// Preprocessed inputs for `bundle`: the reference photographs and every 8th frame of the clip.
fn inputs(bundle: &Bundle) -> Vec<(String, Vec<f32>)> {
    let mut paths: Vec<PathBuf> = ["preprocess", "clip"]
        .iter()
        .flat_map(|d| std::fs::read_dir(common::data(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            !name.contains(".ref") && (name.ends_with(".jpg") || name.ends_with(".png"))
        })
        .collect();
    paths.sort();
    let mut frame = 0;
    paths.retain(|p| {
        let is_frame = p.to_string_lossy().contains("frame_");
        frame += usize::from(is_frame);
        !is_frame || frame % 8 == 1
    });
    let mut pre = Preprocessor::new(Spec::from(&bundle.manifest.image));
    paths
        .iter()
        .map(|p| {
            let mut pixels = vec![0f32; pre.output_len()];
            pre.image_to_tensor(&load_image(p).unwrap(), &mut pixels)
                .unwrap();
            (p.file_name().unwrap().to_string_lossy().into(), pixels)
        })
        .collect()
}

#[test]
fn auto_picks_the_cpu_when_cuda_does_not_load() {
    let s = device::select(Runtime::Auto).unwrap();
    if !device::CUDA_BUILT {
        assert_eq!(s.device, Device::Cpu);
        assert!(s.reason.contains("built without CUDA"), "{}", s.reason);
    } else if s.device == Device::Cpu {
        // No driver here: tract-cuda's own loader said so. (Not "not registered": that would
        // mean the linker dropped tract-cuda's runtime registration.)
        assert!(s.reason.contains("CUDA driver"), "{}", s.reason);
    } else {
        eprintln!("a CUDA GPU is present: {}", s.reason);
    }
    // The daemon follows: it starts, on the CPU unless a GPU is there.
    Daemon::new(demo_config(Runtime::Auto)).unwrap();
}

#[test]
fn cuda_is_a_clear_error_when_unavailable() {
    if device::select(Runtime::Cuda).is_ok() {
        eprintln!("a CUDA GPU is present: nothing to check");
        return;
    }
    let e = Daemon::new(demo_config(Runtime::Cuda))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("model.runtime: \"cuda\" is not available"),
        "{e}"
    );
    if device::CUDA_BUILT {
        assert!(e.contains("CUDA driver"), "{e}");
    } else {
        assert!(e.contains("built without CUDA"), "{e}");
        assert!(e.contains("--features cuda"), "{e}");
    }
    let e = ImageEncoder::load_on(&demo(), None, Device::Cuda).unwrap_err();
    assert!(e.to_string().contains("\"cuda\" is not available"), "{e}");
}

/// The demo ships static int8 on integer kernels (its default), fp32 and fp16. Unasked and
/// without timing (`load_on`; `load_for` times the files first: tests/precision_timing.rs), the
/// CPU takes the int8 file where it has int8 dot products and the fp32 file elsewhere
/// (`device::pick_cpu_precision`, unit-tested for every combination); asked for, each file is
/// there.
#[test]
fn the_cpu_runs_the_demo_int8_file_only_with_int8_dot_products() {
    let encoder = ImageEncoder::load_on(&demo(), None, Device::Cpu).unwrap();
    assert_eq!(encoder.device(), Device::Cpu);
    let expected = if device::cpu_has_int8_dot() {
        Precision::Int8Static
    } else {
        Precision::Fp32
    };
    assert_eq!(encoder.precision(), expected);
    for p in [Precision::Int8Static, Precision::Fp32] {
        let encoder = ImageEncoder::load_for(&demo(), Some(p), Runtime::Cpu).unwrap();
        assert_eq!(encoder.precision(), p);
    }
}

/// The binary: `$EDGECLIP_BIN` when set (this test binary run on another machine, as
/// `benches/gpu/run.sh` does), else the one cargo built with it.
fn edgeclip_bin() -> PathBuf {
    std::env::var_os("EDGECLIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgeclip")))
}

/// Runs [`edgeclip_bin`] with `args`, logging warnings only.
fn edgeclip(args: &[&str]) -> std::process::Output {
    std::process::Command::new(edgeclip_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edgeclip")
}

#[test]
fn the_command_line_names_the_runtime() {
    let demo = common::root().join("models/demo");
    let demo = demo.to_str().unwrap();
    let frame = common::data("clip/frame_0040.jpg");
    let out = edgeclip(&[
        "classify",
        "--model",
        demo,
        "--runtime",
        "cuda",
        "--json",
        frame.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if device::select(Runtime::Cuda).is_ok() {
        assert!(out.status.success(), "{stderr}");
    } else {
        assert!(!out.status.success());
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains("error: --runtime: \"cuda\" is not available: "),
            "{stderr}"
        );
        // Without a GPU, `warmup` prepares the CPU (times the image files), saying why.
        let cache = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(edgeclip_bin())
            .args(["warmup", "--model", demo])
            .env("CACHE_DIRECTORY", cache.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.starts_with("cpu:          "), "{stdout}");
        assert!(stdout.contains("CUDA"), "{stdout}");
    }
    // Timing off: the flag-based choice below.
    let out = std::process::Command::new(edgeclip_bin())
        .args(["bench", "--model", demo, "--runtime", "cpu"])
        .args(["--iters", "3", "--json"])
        .env("RUST_LOG", "warn")
        .env("EDGECLIP_PRECISION_TIMING", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device"], "cpu");
    // The demo ships static int8 on integer kernels (default), fp32 and fp16: the CPU runs the
    // int8 file where it has int8 dot products, else fp32 (pick_cpu_precision).
    let expected = if device::cpu_has_int8_dot() {
        "int8-static"
    } else {
        "fp32"
    };
    assert_eq!(report["precision"], expected);
    assert_eq!(report["iters"], 3);
}

/// tract-cuda's kernel folder follows `--kernel-cache`, else the daemon's cache folder
/// (`$CACHE_DIRECTORY` first), whatever `XDG_CACHE_HOME` says (the binary logs the folder at
/// debug level before it looks for a GPU).
#[cfg(feature = "gpu-runtime")]
#[test]
fn the_kernel_cache_follows_the_command_line() {
    if device::select(Runtime::Cuda).is_ok() {
        // warmup would compile for real (90 s each); benches/gpu/run.sh checks the folder there.
        eprintln!("a CUDA GPU is present: skipped");
        return;
    }
    let demo = common::root().join("models/demo");
    let tmp = tempfile::tempdir().unwrap();
    let (given, service, elsewhere) = (
        tmp.path().join("given"),
        tmp.path().join("service"),
        tmp.path().join("xdg"),
    );
    let kept_in = |args: &[&str]| {
        let out = std::process::Command::new(edgeclip_bin())
            .args(args)
            .env("RUST_LOG", "edgeclip=debug")
            .env("XDG_CACHE_HOME", &elsewhere)
            .env("CACHE_DIRECTORY", &service)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        stderr
            .lines()
            .find(|l| l.contains("compiled CUDA kernels are kept in"))
            .unwrap_or_else(|| panic!("no kernel folder logged:\n{stderr}"))
            .to_string()
    };
    let model = demo.to_str().unwrap();
    let line = kept_in(&[
        "warmup",
        "--model",
        model,
        "--kernel-cache",
        given.to_str().unwrap(),
    ]);
    assert!(
        line.contains(&format!("{}/tract/", given.display())),
        "{line}"
    );
    let line = kept_in(&["warmup", "--model", model]);
    assert!(
        line.contains(&format!("{}/tract/", service.display())),
        "{line}"
    );
}

/// The fp16 variant `models/tools/edgeclip_tools/gpu_variant.py` wrote loads in tract and agrees
/// with fp32 (run on the CPU here: the graph is the same one the GPU gets).
#[test]
fn the_fp16_variant_matches_fp32() {
    let bundle = demo();
    assert!(bundle.image_precisions().contains(&Precision::Fp16));
    let fp32 = ImageEncoder::load(&bundle, Some(Precision::Fp32)).unwrap();
    let fp16 = ImageEncoder::load(&bundle, Some(Precision::Fp16)).unwrap();
    // Two images: tract runs f16 slowly on a CPU without native f16 arithmetic.
    for (name, pixels) in inputs(&bundle).iter().take(2) {
        let cos = common::cosine(&fp32.encode(pixels).unwrap(), &fp16.encode(pixels).unwrap());
        assert!(cos >= 0.999, "{name}: cosine(fp16, fp32) = {cos}");
    }
}

/// Per image, the GPU's embedding against the CPU's, for every file the bundle ships.
///
/// Float files (fp16, fp32: what the GPU path picks) against fp32 on the CPU: every cosine
/// >= 0.999 (the bound).
///
/// An int8 file runs on the GPU only when asked for (its integer operators, ConvInteger /
/// MatMulInteger, have no CUDA kernels and stay on the CPU; a QDQ file's float operators run on
/// the GPU). Its float sums come out of cuDNN in another order than on the CPU, so a value
/// that lands near a rounding boundary of the next QuantizeLinear can move by one step, and that
/// step travels through the following layers: measured on an H100, 0.9963 at worst against the
/// CPU's run of the same file. It is held to the bounds `tests/runtime.rs` uses for tract's QDQ
/// against onnxruntime's (two backends, one int8 file): cosine >= 0.99 against the CPU's int8
/// run, and per image at most 0.01 further from the fp32 model than the CPU's int8 run is.
#[test]
#[ignore = "needs a CUDA GPU: run by benches/gpu/run.sh"]
fn gpu_embeddings_match_the_cpu() {
    let mut bundles = vec![common::root().join("models/demo")];
    if let Some(extra) = std::env::var_os("EDGECLIP_GPU_BUNDLES") {
        bundles.extend(std::env::split_paths(&extra).filter(|p| !p.as_os_str().is_empty()));
    }
    let mut failures = Vec::new();
    for dir in &bundles {
        let bundle = Bundle::load(dir).unwrap();
        let inputs = inputs(&bundle);
        let float_ref = bundle
            .image_precisions()
            .contains(&Precision::Fp32)
            .then(|| ImageEncoder::load(&bundle, Some(Precision::Fp32)).unwrap());
        for precision in bundle.image_precisions() {
            let gpu = ImageEncoder::load_on(&bundle, Some(precision), Device::Cuda).unwrap();
            let own_cpu;
            let cpu = match (&float_ref, precision.is_int8()) {
                (Some(f), false) => f,
                _ => {
                    own_cpu = ImageEncoder::load(&bundle, Some(precision)).unwrap();
                    &own_cpu
                }
            };
            let bound = if precision.is_int8() { 0.99 } else { 0.999 };
            let mut worst = (1.0f32, String::new());
            // int8 only: (GPU int8 vs CPU fp32) - (CPU int8 vs CPU fp32), the worst image.
            let mut fidelity = (f32::INFINITY, String::new(), 0.0, 0.0);
            for (name, pixels) in &inputs {
                let (on_gpu, on_cpu) = (gpu.encode(pixels).unwrap(), cpu.encode(pixels).unwrap());
                let cos = common::cosine(&on_gpu, &on_cpu);
                if cos < worst.0 {
                    worst = (cos, name.clone());
                }
                if let (true, Some(f)) = (precision.is_int8(), &float_ref) {
                    let float = f.encode(pixels).unwrap();
                    let (g, c) = (
                        common::cosine(&on_gpu, &float),
                        common::cosine(&on_cpu, &float),
                    );
                    if g - c.min(0.99) < fidelity.0 {
                        fidelity = (g - c.min(0.99), name.clone(), g, c);
                    }
                }
            }
            let line = format!(
                "{} {precision} on the GPU vs {} on the CPU: min cosine {:.6} ({}) over {} images \
                 (bound {bound})",
                bundle.name(),
                cpu.precision(),
                worst.0,
                worst.1,
                inputs.len()
            );
            eprintln!("{line}");
            if worst.0 < bound {
                failures.push(line);
            }
            if fidelity.0.is_finite() {
                let (margin, name, g, c) = fidelity;
                let line = format!(
                    "{} {precision} against fp32 (CPU): worst image {name}: {g:.6} on the GPU, \
                     {c:.6} on the CPU (bound: the CPU's, capped at 0.99, minus 0.01)",
                    bundle.name()
                );
                eprintln!("{line}");
                if margin < -0.01 {
                    failures.push(line);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

type EventKey = (String, String, u64);

fn replay_events(config: Config) -> Vec<EventKey> {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<EventKey>>>);
    impl edgeclip::sink::EventSink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn publish(&mut self, e: &edgeclip::event::Event) -> Result<(), edgeclip::sink::SinkError> {
            let kind = format!("{:?}", e.kind);
            self.0
                .lock()
                .unwrap()
                .push((kind, e.label.clone(), e.frame));
            Ok(())
        }
    }
    let daemon = Daemon::new(common::without_snapshots(config)).unwrap();
    let source = edgeclip::source::open_source(daemon.config().camera()).unwrap();
    let recorder = Recorder::default();
    let control = edgeclip::daemon::Control::default();
    let delivery = edgeclip::daemon::Delivery::Lossless;
    daemon
        .run(
            vec![source],
            vec![Box::new(recorder.clone())],
            &control,
            delivery,
        )
        .unwrap();
    recorder.0.lock().unwrap().clone()
}

/// The daemon on the recorded clip: on the GPU with the same file, exactly the CPU's events; with
/// each device's own pick (fp16 on the GPU, fp32 or int8 on the CPU), the same starts and ends, each
/// within 2 frames. Replayed losslessly at 200 fps (events are counted in frames, not seconds).
#[test]
#[ignore = "needs a CUDA GPU: run by benches/gpu/run.sh"]
fn gpu_daemon_gives_the_cpu_events() {
    let with = |runtime, precision| {
        let mut c = demo_config(runtime);
        c.model.precision = precision;
        c.cameras[0].fps = 200.0;
        replay_events(c)
    };
    let cpu32 = with(Runtime::Cpu, Some(Precision::Fp32));
    let gpu32 = with(Runtime::Cuda, Some(Precision::Fp32));
    eprintln!("CPU fp32: {cpu32:?}\nGPU fp32: {gpu32:?}");
    assert!(!cpu32.is_empty());
    assert_eq!(gpu32, cpu32, "fp32: GPU events differ from the CPU's");

    let cpu = with(Runtime::Cpu, None);
    let gpu = with(Runtime::Cuda, None);
    eprintln!("CPU default: {cpu:?}\nGPU default: {gpu:?}");
    assert_eq!(gpu.len(), cpu.len(), "{gpu:?} vs {cpu:?}");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert_eq!((&g.0, &g.1), (&c.0, &c.1), "{gpu:?} vs {cpu:?}");
        assert!(g.2.abs_diff(c.2) <= 2, "{g:?} vs {c:?}");
    }
}

/// Kernels compiled once are kept: after a first load on the GPU, the kernel folder is not empty,
/// and a second load in the same process (the context is reused) compiles nothing new. How long
/// a second start takes is measured by `benches/gpu/run.sh`, not asserted here.
#[test]
#[ignore = "needs a CUDA GPU: run by benches/gpu/run.sh"]
fn gpu_kernels_are_cached_on_disk() {
    ImageEncoder::load_on(&demo(), None, Device::Cuda).unwrap();
    let dir = device::kernel_dir().unwrap();
    let n = device::count_kernels(&dir);
    eprintln!("{n} compiled kernel libraries in {}", dir.display());
    assert!(n > 0);
    let started = std::time::Instant::now();
    ImageEncoder::load_on(&demo(), Some(Precision::Fp32), Device::Cuda).unwrap();
    eprintln!("second load on the GPU: {:?}", started.elapsed());
    assert_eq!(
        device::count_kernels(&dir),
        n,
        "the second load compiled kernels again"
    );
}

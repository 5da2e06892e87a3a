//! `edgeclip bench`: how fast a bundle's image tower loads and runs on this machine; and
//! `edgeclip warmup`, which prepares it (GPU kernels compiled, or the CPU's precision timed).
//!
//! The figures a user needs to size a deployment: load time (parse, type, optimize, plan), the
//! first inference (which pays lazy set-up), then the latency distribution of `iters` more runs,
//! their frames per second, and the process's peak resident memory. The input is a fixed
//! pseudo-random tensor, so preprocessing is not included (`benches/pipeline.rs` measures it).
//!
//! `--iters 0` loads the model and runs nothing: subtracting such a run from one with `N` runs
//! gives the per-inference cost of instruction counters such as `arm-insn-count`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use anyhow::Context;

use crate::model::{Bundle, Device, ImageEncoder, ModelError, Precision, Runtime};

/// What `edgeclip bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The bundle's name.
    pub model: String,
    /// The ONNX file that ran.
    pub file: String,
    /// Where it ran: `cpu` or `cuda`.
    pub device: String,
    /// Its precision.
    pub precision: String,
    /// Threads given to tract's matrix products.
    pub threads: usize,
    /// Timed inferences after the first.
    pub iters: usize,
    /// Loading the bundle and building the plan, in milliseconds.
    pub load_ms: f64,
    /// The first inference, in milliseconds (`None` with `iters = 0`).
    pub first_ms: Option<f64>,
    /// Median latency of the timed inferences.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency of the timed inferences.
    pub p95_ms: Option<f64>,
    /// Mean latency of the timed inferences.
    pub mean_ms: Option<f64>,
    /// Fastest timed inference.
    pub min_ms: Option<f64>,
    /// Timed inferences per second of wall time.
    pub fps: Option<f64>,
    /// Peak resident set size of the process (Linux only).
    pub peak_rss_mb: Option<f64>,
}

/// Loads `dir`'s image tower at `precision` on `runtime` (the file and device chosen as the
/// daemon chooses them) and runs it `1 + iters` times (`0` runs with `iters = 0`).
pub fn bench_image_tower(
    dir: &Path,
    runtime: Runtime,
    precision: Option<Precision>,
    threads: usize,
    iters: usize,
) -> Result<BenchReport, ModelError> {
    crate::model::set_threads(threads);
    let start = Instant::now();
    let bundle = Bundle::load(dir)?;
    let encoder = ImageEncoder::load_for(&bundle, precision, runtime)?;
    let load = start.elapsed();

    let pixels = test_pattern(encoder.input_len());
    let mut embedding = vec![0f32; encoder.dim()];
    let mut first = None;
    let mut times = Vec::with_capacity(iters);
    let mut total = Duration::ZERO;
    if iters > 0 {
        let t = Instant::now();
        encoder.encode_into(&pixels, &mut embedding)?;
        first = Some(t.elapsed());
        for _ in 0..iters {
            let t = Instant::now();
            encoder.encode_into(&pixels, &mut embedding)?;
            let dt = t.elapsed();
            total += dt;
            times.push(dt);
        }
    }
    times.sort();
    Ok(BenchReport {
        model: bundle.name().to_string(),
        file: encoder.path().display().to_string(),
        device: encoder.device().as_str().to_string(),
        precision: encoder.precision().to_string(),
        threads,
        iters,
        load_ms: ms(load),
        first_ms: first.map(ms),
        p50_ms: percentile(&times, 0.50).map(ms),
        p95_ms: percentile(&times, 0.95).map(ms),
        mean_ms: (!times.is_empty()).then(|| ms(total) / times.len() as f64),
        min_ms: times.first().copied().map(ms),
        fps: (!times.is_empty()).then(|| times.len() as f64 / total.as_secs_f64()),
        peak_rss_mb: peak_rss_mb(),
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.2} {unit}"),
            None => "-".to_string(),
        };
        writeln!(
            f,
            "model:        {} ({}, {} on {})",
            self.model, self.file, self.precision, self.device
        )?;
        writeln!(f, "threads:      {}", self.threads)?;
        writeln!(f, "load:         {:.1} ms", self.load_ms)?;
        writeln!(f, "first run:    {}", opt(self.first_ms, "ms"))?;
        writeln!(
            f,
            "latency:      p50 {}, p95 {} over {} runs",
            opt(self.p50_ms, "ms"),
            opt(self.p95_ms, "ms"),
            self.iters
        )?;
        writeln!(f, "throughput:   {}", opt(self.fps, "frames/s"))?;
        write!(f, "peak RSS:     {}", opt(self.peak_rss_mb, "MB"))
    }
}

/// `edgeclip warmup`: on a GPU, tract-cuda's kernels compiled into the kernel cache and the
/// image tower run once; on the CPU, the shipped image files timed and the fastest cached
/// ([`warmup_cpu`]).
pub fn warmup(dir: &Path, precision: Option<Precision>) -> anyhow::Result<()> {
    use crate::model::device::{count_kernels, kernel_dir};
    let bundle = Bundle::load(dir)?;
    let selection = crate::model::device::select(Runtime::Auto).context("warmup")?;
    if selection.device == Device::Cpu {
        return warmup_cpu(&bundle, precision, &selection.reason);
    }
    println!("cuda:         {}", selection.reason);
    let kernels = kernel_dir().context("no kernel folder")?;
    let before = count_kernels(&kernels);
    let started = std::time::Instant::now();
    let encoder = ImageEncoder::load_on(&bundle, precision, Device::Cuda)?;
    let took = started.elapsed().as_secs_f64();
    let after = count_kernels(&kernels);
    println!(
        "kernels:      {} ({after} compiled kernel libraries, {} new)",
        kernels.display(),
        after.saturating_sub(before)
    );
    println!(
        "image tower:  {} ({}) loaded and run once on the GPU in {took:.1} s",
        encoder.path().display(),
        encoder.precision()
    );
    Ok(())
}

/// `warmup` on the CPU: times the shipped image files and caches the fastest
/// ([`ImageEncoder::timed_cpu_precision`]), unless `precision` names the file to run.
fn warmup_cpu(bundle: &Bundle, precision: Option<Precision>, why: &str) -> anyhow::Result<()> {
    println!("cpu:          {why}");
    if let Some(p) = precision {
        println!("image tower:  {p} (--precision): nothing to time");
        return Ok(());
    }
    match ImageEncoder::timed_cpu_precision(bundle, true) {
        Some(choice) => {
            for t in &choice.timed {
                println!(
                    "timed:        {} p50 {:.2} ms ({} runs)",
                    t.precision, t.p50_ms, t.runs
                );
            }
            println!(
                "image tower:  {} (the fastest here; cached in {})",
                choice.precision,
                crate::paths::precision_cache_dir()
                    .map_or_else(|| "no cache folder".into(), |d| d.display().to_string())
            );
        }
        None => println!(
            "image tower:  nothing to time: fewer than two of the shipped files are fast on this CPU"
        ),
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A deterministic input in the range of normalised pixels (about -2..2), so every run of the
/// bench feeds the same numbers and int8 graphs see activations of a realistic scale.
pub fn test_pattern(len: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

/// `VmHWM` from `/proc/self/status`: the most resident memory the process has had.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&d, 0.95), Some(Duration::from_millis(19)));
        assert_eq!(percentile(&d[..1], 0.95), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn test_pattern_is_deterministic_and_in_range() {
        let a = test_pattern(1000);
        assert_eq!(a, test_pattern(1000));
        assert!(a.iter().all(|v| (-2.0..=2.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.2, "mean {mean}");
    }

    #[test]
    fn bench_on_the_demo_bundle() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo");
        let r = bench_image_tower(&dir, Runtime::Cpu, Some(Precision::Fp32), 1, 3).unwrap();
        assert!(r.file.ends_with("visual.fp32.onnx"), "{}", r.file);
        assert_eq!(r.device, "cpu");
        assert_eq!(r.iters, 3);
        let (p50, p95) = (r.p50_ms.unwrap(), r.p95_ms.unwrap());
        assert!(p50 > 0.0 && p50 <= p95, "p50 {p50} p95 {p95}");
        assert!(r.fps.unwrap() > 0.0);
        assert!(r.first_ms.unwrap() > 0.0);
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "load_ms",
            "first_ms",
            "p50_ms",
            "p95_ms",
            "fps",
            "peak_rss_mb",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        if cfg!(target_os = "linux") {
            assert!(r.peak_rss_mb.unwrap() > 1.0);
        }

        let load_only = bench_image_tower(&dir, Runtime::Cpu, None, 1, 0).unwrap();
        assert!(load_only.first_ms.is_none() && load_only.p50_ms.is_none());
    }
}

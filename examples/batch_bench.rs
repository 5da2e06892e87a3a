//! Issue 27's batch and worker figures: the image tower on batches of 1, 2, 4 and 8 images,
//! with 1 or 2 intra-op threads and 1 or 2 inference workers. For each configuration it prints
//! the median time of one `encode_batch_into` call over the runs (after two warm-up runs), the
//! time per image and the throughput (images/s). Images are seeded pseudo-random pixels (the
//! tower's time does not depend on them). Printed as rows of `benches/README.md`'s table.
//!
//!   batch_bench BUNDLE PRECISION [RUNS] [THREADSxWORKERS ...] [--batches 1,2,4,8]
//!
//! e.g. `target/debug/examples/batch_bench models/demo int8-static 40 1x1 2x1 1x2` after
//! `cargo build --example batch_bench` (the dev profile builds tract at opt-level 3 and this
//! crate at 2, see Cargo.toml, so its figures are tract's; `benches/batch.sh` runs the set).

use std::time::Instant;

use edgeclip::model::{Bundle, ImageEncoder, Precision, set_threads};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!(
            "usage: batch_bench BUNDLE PRECISION [RUNS] [THREADSxWORKERS ...] [--batches 1,2,4,8]"
        );
        std::process::exit(2);
    }
    let bundle = Bundle::load(&args[0]).unwrap_or_else(|e| panic!("{e:#}"));
    let precision: Precision = args[1].parse().unwrap_or_else(|e| panic!("{e}"));
    let mut runs = 30usize;
    let mut configs = Vec::new();
    let mut batches = vec![1usize, 2, 4, 8];
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--batches" {
            let list = rest.next().expect("--batches 1,2,4,8");
            batches = list
                .split(',')
                .map(|b| b.parse().expect("a batch size"))
                .collect();
        } else if let Some((t, w)) = arg.split_once('x') {
            configs.push((
                t.parse::<usize>().expect("threads"),
                w.parse::<usize>().expect("workers"),
            ));
        } else {
            runs = arg.parse().expect("RUNS");
        }
    }
    if configs.is_empty() {
        configs = vec![(1, 1), (2, 1), (1, 2)];
    }
    let started = Instant::now();
    let mut encoder =
        ImageEncoder::load(&bundle, Some(precision)).unwrap_or_else(|e| panic!("{e:#}"));
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    eprintln!(
        "{} ({precision}): loaded in {load_ms:.0} ms, batches {}, RSS {} MB",
        encoder.path().display(),
        match encoder.batching() {
            Ok(()) => "in one call".to_string(),
            Err(why) => format!("image by image ({why})"),
        },
        rss_mb()
    );
    let max = *batches.iter().max().unwrap_or(&1);
    let pixels = pixels(max * encoder.input_len());
    let mut out = vec![0f32; max * encoder.dim()];
    println!(
        "| model | precision | threads | workers | batch | ms per batch (p50) | ms per image | images/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &(threads, workers) in &configs {
        set_threads(threads);
        encoder.set_workers(workers);
        for &n in &batches {
            let input = &pixels[..n * encoder.input_len()];
            let output = &mut out[..n * encoder.dim()];
            for _ in 0..2 {
                encoder.encode_batch_into(input, output).unwrap();
            }
            let mut times: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    encoder.encode_batch_into(input, output).unwrap();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let p50 = times[times.len() / 2];
            println!(
                "| {} | {precision} | {threads} | {workers} | {n} | {p50:.2} | {:.2} | {:.0} |",
                bundle.manifest.name,
                p50 / n as f64,
                n as f64 * 1e3 / p50
            );
        }
    }
    eprintln!("RSS after the runs: {} MB", rss_mb());
}

/// Seeded pseudo-random pixels in the range of normalised ones.
fn pixels(len: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// The resident set size in MB (Linux; 0 elsewhere).
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

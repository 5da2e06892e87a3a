//! Issue 27's batch and worker figures: the image tower on batches of 1, 2, 4 and 8 images,
//! with 1 or 2 intra-op threads and 1 or 2 inference workers, each worker's share run image by
//! image or in one call (`set_one_call_batches`). For each configuration it prints the median
//! time of one `encode_batch_into` call over the runs (after two warm-up runs; the two modes
//! alternate run by run) and the throughput (images/s). Images are seeded pseudo-random pixels (the
//! tower's time does not depend on them). Printed as rows of `benches/README.md`'s table.
//!
//!   batch_bench BUNDLE PRECISION [RUNS] [THREADSxWORKERS ...] [--batches 1,2,4,8]
//!               [--only image|one-call]
//!
//! `--only` runs one mode (for instruction counts: `benches/batch.sh`).
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
            "usage: batch_bench BUNDLE PRECISION [RUNS] [THREADSxWORKERS ...] [--batches 1,2,4,8] \
             [--only image|one-call]"
        );
        std::process::exit(2);
    }
    let bundle = Bundle::load(&args[0]).unwrap_or_else(|e| panic!("{e:#}"));
    let precision: Precision = args[1].parse().unwrap_or_else(|e| panic!("{e}"));
    let mut runs = 30usize;
    let mut configs = Vec::new();
    let mut batches = vec![1usize, 2, 4, 8];
    let mut only = None;
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--only" {
            only = match rest.next().map(String::as_str) {
                Some("image") => Some(0),
                Some("one-call") => Some(1),
                _ => panic!("--only image|one-call"),
            };
        } else if arg == "--batches" {
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
    let load = || ImageEncoder::load(&bundle, Some(precision)).unwrap_or_else(|e| panic!("{e:#}"));
    let mut singles = load();
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_one = rss_mb();
    let mut batched = load();
    let started = Instant::now();
    batched
        .set_one_call_batches(true)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{} ({precision}): loaded in {load_ms:.0} ms (RSS {rss_one} MB), the plan for one-call \
         batches in {:.0} ms more: {}; RSS with both encoders {} MB",
        singles.path().display(),
        started.elapsed().as_secs_f64() * 1e3,
        match batched.one_call_batches() {
            Ok(()) => "batches run in one call".to_string(),
            Err(why) => format!("image by image ({why})"),
        },
        rss_mb()
    );
    let max = *batches.iter().max().unwrap_or(&1);
    let pixels = pixels(max * singles.input_len());
    let mut out = vec![0f32; max * singles.dim()];
    println!(
        "| model | precision | threads | workers | batch | ms per batch, image by image (p50) | \
         ms per batch, one call (p50) | images/s, image by image | images/s, one call |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(threads, workers) in &configs {
        set_threads(threads);
        singles.set_workers(workers);
        batched.set_workers(workers);
        for &n in &batches {
            let input = &pixels[..n * singles.input_len()];
            let output = &mut out[..n * singles.dim()];
            // The two modes alternate run by run, so that a load from elsewhere hits both alike.
            let mut times = [Vec::new(), Vec::new()];
            for run in 0..runs + 2 {
                for (mode, encoder) in [&singles, &batched].into_iter().enumerate() {
                    if only.is_some_and(|o| o != mode) {
                        continue;
                    }
                    let t = Instant::now();
                    encoder.encode_batch_into(input, output).unwrap();
                    if run >= 2 {
                        times[mode].push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let [a, b] = times.map(|mut t| {
                t.sort_by(f64::total_cmp);
                t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
            });
            println!(
                "| {} | {precision} | {threads} | {workers} | {n} | {a:.2} | {b:.2} | {:.0} | {:.0} |",
                bundle.manifest.name,
                n as f64 * 1e3 / a,
                n as f64 * 1e3 / b
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

//! Runs one image-tower ONNX file through edgeclip's tract engine, for measuring int8 forms.
//!
//! ```sh
//! cargo run --release --example onnx_probe -- MODEL.onnx SIZE [ITERS] [--ops] [--profile] [--input F] [--output F]
//! ```
//!
//! Loads `MODEL.onnx` (input `pixel_values` `[1,3,SIZE,SIZE]` f32, output `image_embeds`, other
//! names with `--names IN,OUT`) the way the runtime does, runs it ITERS times (default 1) on
//! `--input` (raw little-endian f32) or on a fixed pseudo-random tensor, and prints the median and
//! minimum wall time of one run. `--ops` prints the optimized plan's op counts and the matrix
//! kernels it picked; `--profile` the time per operator kind and the slowest nodes over ITERS
//! runs (tract's plan evaluated node by node); `--output` writes the embedding as raw f32.
//! With ITERS = 0 nothing runs, so `insns(N) - insns(0)` under callgrind or `arm-insn-count` is
//! the cost of N inferences.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use edgeclip::model::{ImageEncoder, Precision};

fn main() -> anyhow::Result<()> {
    let mut positional = vec![];
    let (mut ops, mut profile, mut input, mut output) = (false, false, None, None);
    let (mut in_name, mut out_name) = ("pixel_values".to_string(), "image_embeds".to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ops" => ops = true,
            "--profile" => profile = true,
            "--input" => input = Some(PathBuf::from(args.next().context("--input FILE")?)),
            "--output" => output = Some(PathBuf::from(args.next().context("--output FILE")?)),
            "--names" => {
                let v = args.next().context("--names IN,OUT")?;
                let (i, o) = v.split_once(',').context("--names IN,OUT")?;
                (in_name, out_name) = (i.to_string(), o.to_string());
            }
            _ => positional.push(arg),
        }
    }
    let [model, size, rest @ ..] = &positional[..] else {
        bail!(
            "usage: onnx_probe MODEL.onnx SIZE [ITERS] [--ops] [--profile] [--input F] [--output F] [--names IN,OUT]"
        );
    };
    let size: usize = size.parse().context("SIZE")?;
    let iters: usize = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1);
    // RUST_LOG=edgeclip=debug prints where the load time goes.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    edgeclip::model::set_threads(1);

    let t0 = Instant::now();
    let encoder = ImageEncoder::load_onnx(
        model.as_ref(),
        &in_name,
        &out_name,
        size,
        size,
        Precision::Fp32,
    )?;
    eprintln!(
        "loaded {model} in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    if ops {
        let mut counts = BTreeMap::<String, usize>::new();
        for line in encoder.plan_summary() {
            let name = line.split(':').next().unwrap_or_default().to_string();
            *counts.entry(name).or_default() += 1;
            if let Some(kernel) = line.find(" with [").map(|i| &line[i + 6..]) {
                let kernel = kernel.split(']').next().unwrap_or_default();
                *counts.entry(format!("  kernel {kernel}]")).or_default() += 1;
            }
        }
        for (name, n) in counts {
            println!("{n:5} {name}");
        }
    }

    let pixels: Vec<f32> = match &input {
        Some(path) => std::fs::read(path)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => edgeclip::bench::test_pattern(encoder.input_len()),
    };
    if profile {
        // Time per operator kind, then the ten slowest nodes, over ITERS runs.
        let nodes = encoder.profile(&pixels, iters.max(1))?;
        let total: f64 = nodes.iter().map(|(_, t)| t.as_secs_f64()).sum();
        let mut by_op = BTreeMap::<String, f64>::new();
        for (line, t) in &nodes {
            let op = line.split(':').next().unwrap_or_default().to_string();
            *by_op.entry(op).or_default() += t.as_secs_f64();
        }
        let mut by_op: Vec<_> = by_op.into_iter().collect();
        by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
        let per_run = |t: f64| t * 1e3 / iters.max(1) as f64;
        println!("{:>9} {:>6}  operator (per run)", "ms", "share");
        for (op, t) in &by_op {
            println!("{:9.3} {:5.1}%  {op}", per_run(*t), 100.0 * t / total);
        }
        let mut slowest = nodes.clone();
        slowest.sort_by_key(|n| std::cmp::Reverse(n.1));
        println!("slowest nodes:");
        for (line, t) in slowest.iter().take(10) {
            println!(
                "{:9.3}  {}",
                per_run(t.as_secs_f64()),
                line.chars().take(140).collect::<String>()
            );
        }
    }
    let mut out = vec![0.0; encoder.dim()];
    let mut times = vec![];
    for _ in 0..iters {
        let t = Instant::now();
        encoder.encode_into(&pixels, &mut out)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if !times.is_empty() {
        times.sort_by(f64::total_cmp);
        println!(
            "{model}: {iters} runs, median {:.3} ms, min {:.3} ms; out[..4] = {:?}",
            times[times.len() / 2],
            times[0],
            &out[..4.min(out.len())]
        );
    }
    if let Some(path) = output {
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(path, bytes)?;
    }
    Ok(())
}

#!/usr/bin/env python3
"""tract (through `edgeclip bench`) against onnxruntime on the same ONNX files, same threads, same run.

    python3 benches/compare_ort.py models/demo target/models/vit-b32 --threads 1 2

For every bundle given, every image tower file it names (the default and its `[[image.variants]]`)
and every thread count, runs `edgeclip bench --json` (tract: load, first run, then --iters timed
runs) and then onnxruntime's InferenceSession on the same file with intra_op_num_threads set to the
same count (all graph optimisations on, one inter-op thread, the same number of timed runs after
one warm-up run), and prints one table row each with the ratio of the medians, tract/onnxruntime
(below 1: tract is faster). The pairs run back to back so that both see the same machine state.

Needs: onnxruntime and numpy (pip), a built edgeclip (default target/release/edgeclip).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib

import numpy as np
import onnxruntime as ort


def towers(bundle_dir):
    """(file, precision) of every image tower in the bundle, the default first."""
    with open(os.path.join(bundle_dir, "bundle.toml"), "rb") as f:
        manifest = tomllib.load(f)
    image = manifest["image"]
    out = [(image["onnx"], image["precision"])]
    out += [(v["onnx"], v["precision"]) for v in image.get("variants", [])]
    return image, out


def bench_tract(binary, bundle_dir, precision, threads, iters):
    cmd = [binary, "bench", "--model", bundle_dir, "--precision", precision,
           "--threads", str(threads), "--iters", str(iters), "--json"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout)


def bench_ort(path, image, threads, iters):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t = time.perf_counter()
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t) * 1e3
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, image["height"], image["width"]))
    feed = {image["input"]: x.astype(np.float32)}
    t = time.perf_counter()
    sess.run(None, feed)
    first_ms = (time.perf_counter() - t) * 1e3
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    rank = lambda q: times[min(len(times), max(1, int(np.ceil(q * len(times))))) - 1]
    return {"load_ms": load_ms, "first_ms": first_ms, "p50_ms": rank(0.5), "p95_ms": rank(0.95),
            "fps": len(times) / (sum(times) / 1e3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", help="bundle folders")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--iters", type=int, default=30, help="timed runs after the first")
    ap.add_argument("--binary", default="target/release/edgeclip")
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    args = ap.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"{args.binary}: not built (cargo build --release)")

    print(f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, {args.iters} timed runs each",
          file=sys.stderr)
    if not args.json:
        print(f"| model | file | precision | threads | tract load / first / p50 ms "
              f"| onnxruntime load / first / p50 ms | tract/onnxruntime (p50) |")
        print("|---|---|---|---|---|---|---|")
    for bundle in args.bundles:
        image, files = towers(bundle)
        for onnx, precision in files:
            path = os.path.join(bundle, onnx)
            for threads in args.threads:
                tr = bench_tract(args.binary, bundle, precision, threads, args.iters)
                ox = bench_ort(path, image, threads, args.iters)
                ratio = tr["p50_ms"] / ox["p50_ms"]
                if args.json:
                    print(json.dumps({"bundle": bundle, "file": onnx, "precision": precision,
                                      "threads": threads, "tract": tr, "onnxruntime": ox,
                                      "ratio_p50": ratio}))
                else:
                    print(f"| {os.path.basename(os.path.normpath(bundle))} | {onnx} | {precision} "
                          f"| {threads} | {tr['load_ms']:.0f} / {tr['first_ms']:.1f} / "
                          f"{tr['p50_ms']:.2f} | {ox['load_ms']:.0f} / {ox['first_ms']:.1f} / "
                          f"{ox['p50_ms']:.2f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()

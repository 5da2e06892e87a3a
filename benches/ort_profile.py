#!/usr/bin/env python3
"""onnxruntime's own per-operator profile of an image tower, to set beside tract's
(`examples/onnx_probe.rs --profile`), issue 28 part 3.

    python3 benches/ort_profile.py models/demo/visual.fp32.onnx 128 [--iters 200] [--threads 1]

Runs the file with onnxruntime's profiler on (one intra-op and one inter-op thread by default,
all graph optimisations, as benches/compare_ort.py), on the pseudo-random input `edgeclip bench`
feeds tract (src/bench.rs test_pattern), and prints the time per operator kind of the optimised
graph (FusedConv is onnxruntime's Conv with its activation fused in) per run, then the slowest
nodes. The profiler's own cost is in the figures (a few microseconds a node); the plain median
without the profiler is printed first.
"""

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort


def test_pattern(n):
    """src/bench.rs test_pattern: xorshift32 from 0x2545f491, scaled to -2..2."""
    out = np.empty(n, dtype=np.float32)
    s = 0x2545F491
    for i in range(n):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out[i] = np.float32(np.float32(s) / np.float32(4294967295.0)) * np.float32(4) - np.float32(2)
    return out


def session(path, threads, profile_dir=None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(profile_dir, "ort")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("size", type=int)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    plain = session(args.model, args.threads)
    name = plain.get_inputs()[0].name
    feed = {name: test_pattern(3 * args.size * args.size).reshape(1, 3, args.size, args.size)}
    plain.run(None, feed)
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        plain.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(f"{args.model}: onnxruntime {ort.__version__}, {args.threads} thread(s), "
          f"median {times[len(times) // 2]:.3f} ms over {args.iters} runs (no profiler)")

    with tempfile.TemporaryDirectory() as tmp:
        sess = session(args.model, args.threads, tmp)
        sess.run(None, feed)  # first run: not counted below
        for _ in range(args.iters):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    first_ts = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    by_op = collections.Counter()
    by_node = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < first_ts:
            continue
        op = e["args"].get("op_name", "?")
        by_op[op] += e["dur"]
        by_node[(e["name"][: -len("_kernel_time")], op)] += e["dur"]
    total = sum(by_op.values())
    per_run = lambda us: us / 1e3 / args.iters
    print(f"{'ms':>9} {'share':>6}  operator (per run, profiled)")
    for op, us in by_op.most_common():
        print(f"{per_run(us):9.3f} {100 * us / total:5.1f}%  {op}")
    print(f"{per_run(total):9.3f}        all nodes")
    print("slowest nodes:")
    for (node, op), us in by_node.most_common(10):
        print(f"{per_run(us):9.3f}  {op}: {node}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into head
        pass

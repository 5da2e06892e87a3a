#!/usr/bin/env python3
"""Turns the JSON lines benches/gpu/run.sh collected into the Markdown report it prints (the
figures that go into benches/README.md)."""

import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
    steps = {}
    for r in rows:
        if "step" in r:
            steps.setdefault(r["step"], []).append(r)
    one = lambda name, key, default="?": steps.get(name, [{}])[0].get(key, default)  # noqa: E731
    out = ["# GPU check (benches/gpu/run.sh)", ""]
    out.append(f"- GPU: {one('gpu', 'name')}")
    out.append(f"- PyTorch: {one('torch', 'status')}")
    out.append("")
    out.append("| check | result |")
    out.append("|---|---|")
    if "warmup-first" in steps:
        out.append(f"| first `edgeclip warmup` (empty kernel cache: NVRTC compiles tract-cuda's kernels) "
                   f"| {one('warmup-first', 'seconds')} s (rc {one('warmup-first', 'rc')}) |")
        out.append(f"| second `edgeclip warmup` (kernels cached) | {one('warmup-second', 'seconds')} s |")
        out.append(f"| kernel cache after warmup (`--kernel-cache`) | {one('kernel-cache', 'cubins')} cubins, "
                   f"{one('kernel-cache', 'size')}, in `{one('kernel-cache', 'dir')}` |")
    if "second-start" in steps:
        out.append(f"| second start to first inference (`classify` of one frame, process start to result) "
                   f"| {one('second-start', 'seconds')} s (target <= 5 s; rc {one('second-start', 'rc')}) |")
    for c in steps.get("classify", []):
        which = ("each device's pick (CPU: the int8 default, GPU: fp16)" if c["precision"] == "default"
                 else f"{c['precision']} on both")
        out.append(f"| `classify --json`, {which}, {c['images']} clip frames: CPU vs GPU "
                   f"| same top-1 on {c['same_top1']} of {c['images']}; max abs cosine diff "
                   f"{c['max_abs_score_diff']} |")
    for c in steps.get("cosine", []):
        out.append(f"| embeddings, per image | {c['line']} |")
    if "gpu-tests" in steps:
        out.append(f"| GPU tests (`tests/gpu.rs --include-ignored`) | rc {one('gpu-tests', 'rc')} (0: all passed) |")
    d = steps.get("daemon", [{}])[0]
    if d:
        out.append(f"| daemon on the clip, default precision each (CPU int8, GPU fp16) | {d['cpu_events']} events "
                   f"on the CPU, {d['gpu_events']} on the GPU, identical: {d['identical']} |")
    out.append("")
    out.append("## Latency, batch 1, host to host (median of the timed runs)")
    out.append("")
    out.append("| model | runner | device | precision | p50 ms | mean ms | p95 ms | load s |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "p50_ms" not in r:
            continue
        runner = r.get("runner", "edgeclip (tract)")
        device = r.get("device", "cuda")
        load = f"{r['load_ms'] / 1e3:.2f}" if r.get("load_ms") is not None else ""
        out.append(f"| {r['model']} | {runner} | {device} | {r['precision']} | {r['p50_ms']:.3f} | "
                   f"{r['mean_ms']:.3f} | {r['p95_ms']:.3f} | {load} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

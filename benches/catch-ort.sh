#!/usr/bin/env bash
# Issue 28's x86 figures in one run: tract with edgeclip's patches (vendor/README.md), tract as
# released (the same binary with TRACT_EDGECLIP_PATCHES_OFF=1) and onnxruntime, on the same
# files, one thread each; then the daemon's top frame rate against onnxruntime's bare rate.
#
#   bash benches/catch-ort.sh [ROUNDS]        # default 3 rounds
#
# Needs: a release build (`cargo build --release --example onnx_probe --bin edgeclip`),
# python3 with onnxruntime and numpy. ViT-B/32 rows when target/models/vit-b32 exists
# (`python3 -m edgeclip_tools.make_vitb32`, run from models/tools).
#
# 1. Towers: each file runs ROUNDS times in turn in the three ways (patched, stock, onnxruntime),
#    so all three see the same machine state; each run is a median over its iterations, and the
#    table gives the median of the ROUNDS medians and the ratios. The patched and stock
#    embeddings are compared byte for byte (the patches must not change a bit).
# 2. Daemon: firmware-config/demo.toml on the recorded clip with `fps = 1000`, `loop = true` and
#    `--lossless` (every frame scored), SIGTERM after 12 s, patched then stock; frames per
#    second = frames processed / the run's wall time, both from its summary line, against onnxruntime's bare rate (1000 / p50 ms) on the file
#    the daemon chose (its log names it).
# Timings on a shared 2-core machine are noisy: read the ratios, and the load average printed.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
probe=target/release/examples/onnx_probe
bin=target/release/edgeclip
for b in $probe $bin; do
  [[ -x $b ]] || { echo "$b: not built (cargo build --release --example onnx_probe --bin edgeclip)"; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# FILE SIZE ITERS INPUT,OUTPUT
towers=(
  "models/demo/visual.fp32.onnx 128 300 pixel_values,image_embeds"
  "models/demo/visual.onnx 128 300 pixel_values,image_embeds"
)
for f in target/models/vit-b32/visual.onnx target/models/vit-b32/visual.int8-dynamic.onnx; do
  [[ -f $f ]] && towers+=("$f 224 20 pixel_values,image_embeds")
done

cat >"$work/ort.py" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
path, size, iters, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
x = {names[0]: np.random.default_rng(0).uniform(-2, 2, (1, 3, size, size)).astype(np.float32)}
s.run(None, x)
t = []
for _ in range(iters):
    a = time.perf_counter(); s.run(None, x); t.append(time.perf_counter() - a)
t.sort()
print(f"{t[len(t) // 2] * 1e3:.3f}")
PY

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
probe_ms() { # ENV FILE SIZE ITERS NAMES OUT
  env "$1" $probe "$2" "$3" "$4" --names "$5" --output "$6" 2>&1 | tail -n 1 |
    sed -E 's/.*median ([0-9.]+) ms.*/\1/'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "onnxruntime $(python3 -c 'import onnxruntime; print(onnxruntime.__version__)'), 1 thread each, $rounds rounds"
echo
echo "| file | tract patched ms | tract stock ms | onnxruntime ms | patched / stock | patched / onnxruntime | stock / onnxruntime | patched = stock, bit for bit |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${towers[@]}"; do
  read -r file size iters names <<<"$t"
  : >"$work/p"; : >"$work/s"; : >"$work/o"
  for ((r = 0; r < rounds; r++)); do
    probe_ms TRACT_EDGECLIP_PATCHES_OFF=0 "$file" "$size" "$iters" "$names" "$work/emb.patched" >>"$work/p"
    probe_ms TRACT_EDGECLIP_PATCHES_OFF=1 "$file" "$size" "$iters" "$names" "$work/emb.stock" >>"$work/s"
    python3 "$work/ort.py" "$file" "$size" "$iters" "$names" >>"$work/o"
  done
  p=$(median <"$work/p"); s=$(median <"$work/s"); o=$(median <"$work/o")
  same=$(cmp -s "$work/emb.patched" "$work/emb.stock" && echo yes || echo "**NO**")
  awk -v f="$file" -v p="$p" -v s="$s" -v o="$o" -v same="$same" 'BEGIN {
    printf "| `%s` | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |\n", f, p, s, o, p / s, p / o, s / o, same }'
done

# The daemon at its top rate.
sed -e 's|^fps = .*|fps = 1000|' -e 's|^loop = .*|loop = true|' -e "s|\.\./|$PWD/|g" \
  firmware-config/demo.toml >"$work/fast.toml"
grep -q '^loop = true' "$work/fast.toml" || sed -i 's/^\[camera\]/[camera]\nloop = true/' "$work/fast.toml"
daemon_fps() { # ENV
  env "$1" RUST_LOG=info timeout -s TERM 12 $bin run --config "$work/fast.toml" --lossless \
    2>"$work/log" >/dev/null || (($? == 124))
  grep -E "stopped:" "$work/log" | tail -n 1 | sed 's/^.*stopped: //' >"$work/summary"
  # "N processed" over the run's wall time ("cpu A s in B s").
  sed -E 's/.* ([0-9]+) processed.* in ([0-9.]+) s .*/\1 \2/' "$work/summary" |
    awk 'NF == 2 { printf "%.0f", $1 / $2; found = 1 } END { if (!found) print 0 }'
}
echo
for mode in 0 1; do
  fps=$(daemon_fps TRACT_EDGECLIP_PATCHES_OFF=$mode)
  [[ $mode == 0 ]] && name=patched || name=stock
  chosen=$(grep -oE "models/demo/visual[a-z0-9.]*\.onnx" "$work/log" | tail -n 1)
  echo "daemon ($name): $fps frames/s, file ${chosen:-?}; summary: $(cat "$work/summary")"
done
chosen=${chosen:-models/demo/visual.fp32.onnx}
o=$(python3 "$work/ort.py" "$chosen" 128 300 pixel_values,image_embeds)
echo "onnxruntime bare, $chosen: $o ms per inference = $(awk -v o="$o" 'BEGIN { printf "%.0f", 1000 / o }') inferences/s"

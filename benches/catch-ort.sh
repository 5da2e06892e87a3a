#!/usr/bin/env bash
# Issue 28's x86 figures in one run: edgeclip as it loads models (tract with edgeclip's patches,
# vendor/README.md, and the integer convolutions fused at load, src/model/int8_conv.rs), tract
# as released on the file as written (the same binary with TRACT_EDGECLIP_PATCHES_OFF=1 and
# EDGECLIP_FUSE_INT8_CONV=off) and onnxruntime, on the same files, one thread each; then the
# daemon's top frame rate against onnxruntime's bare rate.
#
#   bash benches/catch-ort.sh [ROUNDS]        # default 3 rounds
#
# Needs: a release build (`cargo build --release --example onnx_probe --bin edgeclip`),
# python3 with onnx, onnxruntime and numpy. ViT-B/32 rows when target/models/vit-b32 exists
# (`python3 -m edgeclip_tools.make_vitb32`, run from models/tools).
#
# 1. Towers: each file runs ROUNDS times in turn in the three ways (edgeclip, stock, onnxruntime),
#    so all three see the same machine state; each run is a median over its iterations, and the
#    table gives the median of the ROUNDS medians and the ratios. The patches alone must not
#    change a bit: a fourth, untimed run (patches on, no fusion) is compared byte for byte with
#    the stock one. The fusion rounds the bias and the requantization (one output code at most
#    per convolution): its embedding's cosine to the stock one is printed. For a file with
#    integer convolutions, onnxruntime also runs the same file with the same fusion written into
#    it (`QLinearConv`, by benches/qlinear_conv.py, which mirrors src/model/int8_conv.rs): that is the
#    form onnxruntime itself would be at its best on, so the table gives it too.
# 2. Daemon: firmware-config/demo.toml on the recorded clip with `fps = 1000`, `loop = true` and
#    `--lossless` (every frame scored), SIGTERM after 12 s, edgeclip then stock, then edgeclip
#    with `model.prepare_ahead = false` (decoding and preprocessing on the tower's thread); frames per
#    second = frames processed / the run's wall time, both from its summary line, against
#    onnxruntime's bare rate (1000 / p50 ms) on the file the daemon chose (its log names it).
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
probe_ms() { # "ENV=V ..." FILE SIZE ITERS NAMES OUT
  # shellcheck disable=SC2086 # $1 is a list of assignments
  env $1 $probe "$2" "$3" "$4" --names "$5" --output "$6" 2>&1 | tail -n 1 |
    sed -E 's/.*median ([0-9.]+) ms.*/\1/'
}
edgeclip_env="TRACT_EDGECLIP_PATCHES_OFF=0 EDGECLIP_FUSE_INT8_CONV=on"
stock_env="TRACT_EDGECLIP_PATCHES_OFF=1 EDGECLIP_FUSE_INT8_CONV=off"
patches_env="TRACT_EDGECLIP_PATCHES_OFF=0 EDGECLIP_FUSE_INT8_CONV=off"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "onnxruntime $(python3 -c 'import onnxruntime; print(onnxruntime.__version__)'), 1 thread each, $rounds rounds"
echo
echo "| file | edgeclip ms | tract stock ms | onnxruntime ms | onnxruntime, QLinearConv form ms | edgeclip / stock | edgeclip / onnxruntime | cosine(edgeclip, stock) | patches alone = stock, bit for bit |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in "${towers[@]}"; do
  read -r file size iters names <<<"$t"
  : >"$work/p"; : >"$work/s"; : >"$work/o"; : >"$work/f"
  fused=$(python3 benches/qlinear_conv.py "$file" "$work/fused.onnx")
  for ((r = 0; r < rounds; r++)); do
    probe_ms "$edgeclip_env" "$file" "$size" "$iters" "$names" "$work/emb.edgeclip" >>"$work/p"
    probe_ms "$stock_env" "$file" "$size" "$iters" "$names" "$work/emb.stock" >>"$work/s"
    python3 "$work/ort.py" "$file" "$size" "$iters" "$names" >>"$work/o"
    ((fused == 0)) || python3 "$work/ort.py" "$work/fused.onnx" "$size" "$iters" "$names" >>"$work/f"
  done
  probe_ms "$patches_env" "$file" "$size" 1 "$names" "$work/emb.patches" >/dev/null
  p=$(median <"$work/p"); s=$(median <"$work/s"); o=$(median <"$work/o")
  f=$( ((fused == 0)) && echo "-" || median <"$work/f")
  same=$(cmp -s "$work/emb.patches" "$work/emb.stock" && echo yes || echo "**NO**")
  cos=$(python3 -c "import numpy as np, sys; a, b = (np.fromfile(f, np.float32) for f in sys.argv[1:]); print(f'{a @ b / np.linalg.norm(a) / np.linalg.norm(b):.6f}')" "$work/emb.edgeclip" "$work/emb.stock")
  awk -v file="$file" -v p="$p" -v s="$s" -v o="$o" -v f="$f" -v n="$fused" -v cosine="$cos" -v same="$same" 'BEGIN {
    fcol = (f == "-") ? "-" : sprintf("%.2f (%d fused)", f, n)
    printf "| `%s` | %.2f | %.2f | %.2f | %s | %.2f | %.2f | %s | %s |\n", file, p, s, o, fcol, p / s, p / o, cosine, same }'
done

# The daemon at its top rate.
sed -e 's|^fps = .*|fps = 1000|' -e 's|^loop = .*|loop = true|' -e "s|\.\./|$PWD/|g" \
  firmware-config/demo.toml >"$work/fast.toml"
grep -q '^loop = true' "$work/fast.toml" || sed -i 's/^\[camera\]/[camera]\nloop = true/' "$work/fast.toml"
# The same with model.prepare_ahead off: one thread decodes, preprocesses and encodes in turn.
sed 's/^\[model\]/[model]\nprepare_ahead = false/' "$work/fast.toml" >"$work/in-turn.toml"
daemon_fps() { # "ENV=V ..." [CONFIG]
  # shellcheck disable=SC2086 # $1 is a list of assignments
  env $1 RUST_LOG=info timeout -s TERM 12 $bin run --config "${2:-$work/fast.toml}" --lossless \
    2>"$work/log" >/dev/null || (($? == 124))
  grep -E "stopped:" "$work/log" | tail -n 1 | sed 's/^.*stopped: //' >"$work/summary"
  # "N processed" over the run's wall time ("cpu A s in B s").
  sed -E 's/.* ([0-9]+) processed.* in ([0-9.]+) s .*/\1 \2/' "$work/summary" |
    awk 'NF == 2 { printf "%.0f", $1 / $2; found = 1 } END { if (!found) print 0 }'
}
echo
declare -A chosen seen
for name in edgeclip stock; do
  [[ $name == edgeclip ]] && mode=$edgeclip_env || mode=$stock_env
  fps=$(daemon_fps "$mode")
  chosen[$name]=$(grep -oE "models/demo/visual[a-z0-9.]*\.onnx" "$work/log" | tail -n 1)
  echo "daemon ($name): $fps frames/s, file ${chosen[$name]:-?}; summary: $(cat "$work/summary")"
done
fps=$(daemon_fps "$edgeclip_env" "$work/in-turn.toml")
echo "daemon (edgeclip, prepare_ahead = false): $fps frames/s; summary: $(cat "$work/summary")"
# onnxruntime's bare rate on the file the daemon (edgeclip) chose, and on each of the bundle's
# other CPU files: the issue's target is the same file; its best file is the fairer bar.
for f in "${chosen[edgeclip]:-models/demo/visual.fp32.onnx}" models/demo/visual.onnx models/demo/visual.fp32.onnx; do
  [[ -n ${seen[$f]:-} ]] && continue
  seen[$f]=1
  o=$(python3 "$work/ort.py" "$f" 128 300 pixel_values,image_embeds)
  echo "onnxruntime bare, $f: $o ms per inference = $(awk -v o="$o" 'BEGIN { printf "%.0f", 1000 / o }') inferences/s"
done

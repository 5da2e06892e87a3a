#!/usr/bin/env bash
# Instructions per image-tower inference on emulated Cortex cores (issue 4's ARM cost figures).
#
#   bash benches/arm-insn.sh [BINARY] [MODEL:PRECISION ...]
#
# BINARY: an aarch64 edgeclip (default target/aarch64-unknown-linux-gnu/release/edgeclip, from
# cross/build.sh aarch64). Each model runs under ../shared/tools/arm-insn-count three times per
# CPU, with a fresh cache folder: `edgeclip bench --iters 0` twice (load only: a cold start, which
# hashes the weights, parses the ONNX file and fills the cache, then a warm one, which reads the
# fingerprint memo and the cached graph where tract can write one), and `--iters 4` (warm load,
# the first run + 4); the difference of the last two over 5 is the cost of one inference.
# Default models: the demo student (int8, fp32) and, when generated (models/tools/edgeclip_tools/make_vitb32.py),
# the full-size ViT-B/32 (fp32, dynamic int8, QDQ int8). ARM_INSN_CPUS picks the emulated cores
# (default "cortex-a76 cortex-a72"). Prints one table row per model and CPU. Each count sees the
# cache geometry of the emulated core's Raspberry Pi (benches/board-cache.sh), not the host's:
# tract's blocking depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh
bin=${1:-target/aarch64-unknown-linux-gnu/release/edgeclip}
shift || true
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
models=("$@")
if ((${#models[@]} == 0)); then
  models=(models/demo:int8-static models/demo:fp32)
  if [[ -d target/models/vit-b32 ]]; then
    models+=(target/models/vit-b32:fp32 target/models/vit-b32:int8-dynamic target/models/vit-b32:int8-qdq)
  fi
fi
cpus=${ARM_INSN_CPUS:-cortex-a76 cortex-a72}
insns() { # CPU MODEL PRECISION ITERS CACHE
  XDG_CACHE_HOME=$5 board_cache_run "$1" "$count" --cpu "$1" -- "$bin" bench --model "$2" --precision "$3" --threads 1 --iters "$4" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
}
echo "| model | precision | cpu | load, cold (M insns) | load, warm (M insns) | per inference (M insns) |"
echo "|---|---|---|---|---|---|"
for cpu in $cpus; do
  for m in "${models[@]}"; do
    dir=${m%:*} precision=${m##*:}
    cache=$(mktemp -d)
    cold=$(insns "$cpu" "$dir" "$precision" 0 "$cache")
    warm=$(insns "$cpu" "$dir" "$precision" 0 "$cache")
    runs=$(insns "$cpu" "$dir" "$precision" 4 "$cache")
    rm -rf "$cache"
    [[ -n $cold && -n $warm && -n $runs ]] || { echo "arm-insn-count failed on $m ($cpu)" >&2; exit 1; }
    awk -v m="$dir" -v p="$precision" -v c="$(board_cache_label "$cpu")" -v l="$cold" -v w="$warm" -v r="$runs" \
      'BEGIN { printf "| %s | %s | %s | %.0f | %.0f | %.1f |\n", m, p, c, l / 1e6, w / 1e6, (r - w) / 5 / 1e6 }'
  done
done

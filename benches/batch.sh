#!/usr/bin/env bash
# Issue 27's batch and worker figures (benches/README.md, "Issue 27: batches and workers").
#
#   bash benches/batch.sh          # this machine: images/s and ms per batch for batches of 1, 2, 4, 8
#                                  # with 1x1, 2x1 and 1x2 threads x workers, image by image and in one call
#   bash benches/batch.sh arm      # emulated Cortex-A76 (Pi 5 caches): instructions per image
#                                  # (the demo's towers; ARM_MODELS="DIR:PRECISION ..." for others)
#
# The first runs target/debug/examples/batch_bench (the dev profile builds tract at opt-level 3)
# on the demo's int8 and fp32 towers and the tiny CLIP fixture's ViT (fp32, QDQ int8). The second
# cross-builds the same example for aarch64 and counts, under ../shared/tools/arm-insn-count with
# the Pi 5's cache geometry (benches/board-cache.sh), one process with RUNS runs and one with
# RUNS + EXTRA runs of a batch: the difference over EXTRA x batch is one image's instructions, the
# loads and warm-up runs cancelling out (as benches/arm-insn.sh does for one image).
set -euo pipefail
cd "$(dirname "$0")/.."
models=(models/demo:int8-static models/demo:fp32 tests/data/models/hf-clip-tiny:fp32 tests/data/models/hf-clip-tiny:int8-qdq)
if [[ ${1:-} != arm ]]; then
  nice -n 10 cargo build -q --example batch_bench
  for m in "${models[@]}"; do
    target/debug/examples/batch_bench "${m%:*}" "${m##*:}" "${RUNS:-30}" 1x1 2x1 1x2
  done
  exit 0
fi
source benches/board-cache.sh
models=(${ARM_MODELS:-models/demo:int8-static models/demo:fp32})
[[ -n ${NO_BUILD:-} ]] || nice -n 10 cargo build -q --example batch_bench --target aarch64-unknown-linux-gnu
bin=target/aarch64-unknown-linux-gnu/debug/examples/batch_bench
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
cpu=${ARM_INSN_CPU:-cortex-a76}
runs=2 extra=${EXTRA:-4}
insns() { # MODEL PRECISION RUNS CONFIG BATCH MODE
  board_cache_run "$cpu" "$count" --cpu "$cpu" -- "$bin" "$1" "$2" "$3" "$4" --batches "$5" --only "$6" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
}
echo "| model | precision | cpu | threads x workers | batch | mode | M instructions per image |"
echo "|---|---|---|---|---|---|---|"
for m in "${models[@]}"; do
  for case in "1x1 1 image" "1x1 8 image" "1x1 8 one-call" "2x1 8 image" "1x2 8 image"; do
    read -r config batch mode <<<"$case"
    base=$(insns "${m%:*}" "${m##*:}" "$runs" "$config" "$batch" "$mode")
    more=$(insns "${m%:*}" "${m##*:}" "$((runs + extra))" "$config" "$batch" "$mode")
    [[ -n $base && -n $more ]] || { echo "arm-insn-count failed on $m $case" >&2; exit 1; }
    awk -v m="${m%:*}" -v p="${m##*:}" -v c="$(board_cache_label "$cpu")" -v cf="$config" -v b="$batch" -v mo="$mode" \
      -v a="$base" -v z="$more" -v e="$extra" \
      'BEGIN { printf "| %s | %s | %s | %s | %d | %s | %.1f |\n", m, p, c, cf, b, mo, (z - a) / e / b / 1e6 }'
  done
done

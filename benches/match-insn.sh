#!/usr/bin/env bash
# Instructions per frame of open-set scoring on emulated Cortex cores (issue 24): what the
# vocabulary, the negatives and the example images add to matching one frame.
#
#   bash benches/match-insn.sh
#
# Cross-builds examples/match_cost.rs for aarch64 (the dev profile's optimisation; set
# CARGO_TARGET_DIR to reuse an ARM build folder) and runs it under ../shared/tools/arm-insn-count
# with 0 and N scores; the difference over N is one frame's matching. Sizes: the demo bundle's
# (D=64, 4 labels and the background, closed and with its 44-entry vocabulary) and a real CLIP's
# (D=512, 5 labels and the background, closed and with a 500-entry vocabulary, 2 negatives and 3
# example images per label). Counts are not time; they compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh
target=aarch64-unknown-linux-gnu
cargo build --quiet --target "$target" --example match_cost
bin=${CARGO_TARGET_DIR:-target}/$target/debug/examples/match_cost
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
cpus=${ARM_INSN_CPUS:-cortex-a76 cortex-a72}
insns() { # CPU ARGS...
  local cpu=$1
  shift
  board_cache_run "$cpu" "$count" --cpu "$cpu" -- "$bin" "$@" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
}
n=2000
echo "| matcher | cpu | per frame (insns) |"
echo "|---|---|---|"
for cpu in $cpus; do
  for case in "demo, closed:64 4 0 0 0" "demo, open (44 vocabulary):64 4 44 0 0" \
    "CLIP, closed:512 5 0 0 0" "CLIP, open (500 vocabulary, 2 negatives + 3 images per label):512 5 500 2 3"; do
    name=${case%%:*} args=${case#*:}
    # shellcheck disable=SC2086
    zero=$(insns "$cpu" $args 0)
    # shellcheck disable=SC2086
    many=$(insns "$cpu" $args $n)
    [[ -n $zero && -n $many ]] || { echo "arm-insn-count failed on $name ($cpu)" >&2; exit 1; }
    awk -v m="$name" -v c="$(board_cache_label "$cpu")" -v z="$zero" -v k="$many" -v n="$n" \
      'BEGIN { printf "| %s | %s | %.0f |\n", m, c, (k - z) / n }'
  done
done

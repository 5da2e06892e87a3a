#!/usr/bin/env bash
# Instructions of `edgeclip search`'s scoring over one day of stored frames (86,400 rows, D=512)
# on emulated Cortex cores (issue 26), with the matcher's int8 kernels and with the f32 lanes
# they replaced. Builds benches/search-insn/main.rs for aarch64 with rustc alone (opt-level 2,
# as the dev profile; it compiles src/matcher/kernels.rs itself) and runs it under
# ../shared/tools/arm-insn-count with 0 and 86,400 rows: the difference is the scoring. SQLite's
# reading of the rows is not in it. Counts are not time.
#
#   bash benches/search-insn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh
target=aarch64-unknown-linux-gnu
out=${CARGO_TARGET_DIR:-target}/$target/search_insn
mkdir -p "$(dirname "$out")"
rustc --edition 2024 --target "$target" -C opt-level=2 -C linker=aarch64-linux-gnu-gcc \
    -o "$out" benches/search-insn/main.rs
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
cpus=${ARM_INSN_CPUS:-cortex-a76 cortex-a72}
insns() { # CPU ARGS...
  local cpu=$1
  shift
  board_cache_run "$cpu" "$count" --cpu "$cpu" -- "$out" "$@" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
}
rows=86400
echo "| scoring | cpu | a day, 86,400 rows (insns) | per row |"
echo "|---|---|---|---|"
for cpu in $cpus; do
  for kernel in int8 f32; do
    zero=$(insns "$cpu" 0 512 "$kernel")
    many=$(insns "$cpu" "$rows" 512 "$kernel")
    [[ -n $zero && -n $many ]] || { echo "arm-insn-count failed ($kernel, $cpu)" >&2; exit 1; }
    awk -v k="$kernel" -v c="$(board_cache_label "$cpu")" -v z="$zero" -v m="$many" -v n="$rows" \
      'BEGIN { printf "| %s | %s | %.1f M | %.0f |\n", k, c, (m - z) / 1e6, (m - z) / n }'
  done
done

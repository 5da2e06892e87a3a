#!/usr/bin/env bash
# Instructions per camera-frame on an emulated Cortex-A76 (issue 27): one camera's frame with
# its zones through the whole pipeline (JPEG decode, one crop and resize per zone, the image
# tower once per zone, the matcher and the triggers), the demo model's int8 file.
#
#   bash benches/cameras-insn.sh [BINARY]    # default: target/aarch64-unknown-linux-gnu/debug/edgeclip
#
# `edgeclip replay` (the daemon's Pipeline, unpaced, none dropped) runs the recorded clip's first
# 10 and first 30 frames under ../shared/tools/arm-insn-count with the Pi 5's cache geometry
# (benches/board-cache.sh); the difference over 20 frames is one camera-frame's instructions,
# start-up cancelling out. Twice: the whole frame alone (1 image a frame), and the whole frame
# plus one zone (2 images). A dev-profile binary keeps tract's debug assertions: compare its rows
# with each other (and with batch.sh's per-image row from the same kind of build), not with
# release figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh
bin=${1:-target/aarch64-unknown-linux-gnu/debug/edgeclip}
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
cpu=${ARM_INSN_CPU:-cortex-a76}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
frames=(tests/data/clip/*.jpg)
for n in 10 30; do
  mkdir "$work/clip$n"
  cp "${frames[@]:0:$n}" "$work/clip$n/"
done

config() { # FRAMES ZONE_TABLE
  cat <<TOML
[camera]
name = "cam"
source = "files:$work/clip$1/*.jpg"
$2
[model]
bundle = "$PWD/models/demo"
runtime = "cpu"
precision = "int8-static"
threads = 1
TOML
  sed -n '/^\[\[prompts\]\]/,$p' firmware-config/demo.toml | sed -e '/^\[events\]/,$d'
}

insns() { # CONFIG
  XDG_CACHE_HOME=$work/cache board_cache_run "$cpu" "$count" --cpu "$cpu" -- "$bin" replay --config "$1" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
}

zone='[[camera.zones]]
name = "middle"
rect = [0.3125, 0.25, 0.375, 0.5]'
echo "| zones a frame | images a frame | cpu | M instructions per camera-frame |"
echo "|---|---|---|---|"
for case in "1:" "2:$zone"; do
  images=${case%%:*} table=${case#*:}
  for n in 10 30; do config "$n" "$table" >"$work/c$n.toml"; done
  a=$(insns "$work/c10.toml") b=$(insns "$work/c30.toml")
  printf '| %s | %s | %s | %.1f |\n' "$([[ -n $table ]] && echo "all, middle" || echo all)" "$images" \
    "$(board_cache_label "$cpu")" "$(echo "($b - $a) / 20 / 1000000" | bc -l)"
done

#!/usr/bin/env bash
# Many cameras and zones on one daemon (issue 27; a bench, not a test).
#
#   bash benches/cameras.sh [BINARY] [SECONDS]     # default: target/debug/edgeclip, 60 s
#
# 1. Throughput: the demo model, 4 cameras x 2 zones (the whole frame and one zone each), every
#    camera a different clip replayed at 5 fps (files:, looping, freshest-frame mode: a frame the
#    model could not take in time is replaced and counted as dropped), for SECONDS, once per
#    inference setting (MODEL_SETTINGS, default "auto workers=1,threads=1 workers=1,threads=2
#    workers=2,threads=1": [model] keys as "key=value" pairs joined by commas; "auto" sets none,
#    so the daemon chooses). Prints each camera's frames captured / processed / dropped, and the daemon's own
#    summary: latency p50 / p95 (capture to decision), CPU use.
# 2. Memory: peak RSS (VmHWM) of one daemon with two cameras against two daemons with one camera
#    each, the recorded clip and a generated one, after 20 s.
#
# The clips: the recorded clip (tests/data/clip) and generated ones (examples/scenegen, rendered
# into target/scenes/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/edgeclip}
seconds=${2:-60}
settings=${MODEL_SETTINGS:-"auto workers=1,threads=1 workers=1,threads=2 workers=2,threads=1"}
[[ -x $bin ]] || { echo "no $bin: build it first (cargo test --no-run, or cargo build --release)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

scenes=(targets_temple_1 targets_raccoon_3 distractors_temple_1)
cargo build -q --example scenegen
for s in "${scenes[@]}"; do target/debug/examples/scenegen "$s" >/dev/null; done
clips=("$PWD/tests/data/clip")
for s in "${scenes[@]}"; do clips+=("$PWD/target/scenes/$s"); done

prompts() {
  sed -n '/^\[\[prompts\]\]/,$p' firmware-config/demo.toml | sed -e '/^\[events\]/,$d'
}

# camera NAME DIR: one [[cameras]] entry at 5 fps with a zone (the middle of the view, square).
camera() {
  cat <<TOML
[[cameras]]
name = "$1"
source = "files:$2/*.jpg"
fps = 5
loop = true
[[cameras.zones]]
name = "middle"
rect = [0.3125, 0.25, 0.375, 0.5]
TOML
}

model() { # KEY=VALUE[,KEY=VALUE...] or auto
  printf '[model]\nbundle = "%s/models/demo"\nruntime = "cpu"\n' "$PWD"
  [[ ${1:-auto} == auto ]] && return
  local kv
  for kv in ${1//,/ }; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}"; done
}

config() { # N KEY=VALUE ...: N cameras
  local n=$1; shift
  for ((i = 0; i < n; i++)); do camera "cam$i" "${clips[$i]}"; done
  model "$@"
  prompts
  printf '[events]\nstdout = true\n[stats]\ninterval_s = 0\n'
}

echo "== 4 cameras x 2 zones at 5 fps each, $seconds s, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
for s in $settings; do
  config 4 "$s" >"$work/four.toml"
  RUST_LOG=info timeout -s TERM "$seconds" "$bin" run --config "$work/four.toml" \
    2>"$work/log" >"$work/events" || (($? == 124))
  echo "-- model: $s ($(grep -o 'CPU with [^;]*' "$work/log" | head -1))"
  grep -E "camera cam[0-9]: [0-9]+ frames captured" "$work/log" | sed 's/^.*\] //; s/^/   /' || true
  grep -E "stopped:" "$work/log" | sed "s/^.*stopped: /   /" || { echo "   no summary; log:"; tail -n 5 "$work/log"; }
  echo "   events: $(wc -l <"$work/events")"
done

echo "== peak RSS after 20 s: one daemon with 2 cameras, against 2 daemons with one each"
peak() { # CONFIG...: the sum of the daemons' VmHWM, in MB
  local pids=() total=0
  for c in "$@"; do
    RUST_LOG=warn "$bin" run --config "$c" >/dev/null 2>&1 &
    pids+=($!)
  done
  sleep 20
  for p in "${pids[@]}"; do
    kb=$(sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$p/status")
    total=$((total + kb))
    kill -TERM "$p"
  done
  wait "${pids[@]}" 2>/dev/null || true
  echo "$((total / 1024))"
}
config 2 auto >"$work/two.toml"
for i in 0 1; do
  { camera "cam$i" "${clips[$i]}"; model auto; prompts; printf '[events]\nstdout = true\n[stats]\ninterval_s = 0\n'; } >"$work/one$i.toml"
done
echo "   one daemon, 2 cameras: $(peak "$work/two.toml") MB"
echo "   two daemons, 1 camera each: $(peak "$work/one0.toml" "$work/one1.toml") MB"

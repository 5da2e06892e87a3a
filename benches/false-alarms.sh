#!/usr/bin/env bash
# False alarms per hour and targets found by the demo config (firmware-config/demo.toml's four
# prompts, every default) on the generated clips (tests/data/scenes.md), closed set against open
# set, every frame replayed by the real daemon (issue 24). Renders the clips it needs into
# target/scenes/ first (minutes, once).
#
#   bash benches/false-alarms.sh [--calibration FILE] [RECIPE...]
#
# Default recipes: every distractor, target and quiet clip of the tuning, held-out and stress sets
# (`scenegen list`). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --no-run --quiet
cargo build --quiet --example false_alarms
args=()
if [[ ${1:-} == --calibration ]]; then args+=(--calibration "$2"); shift 2; fi
if (($# == 0)); then
  set -- $(target/debug/examples/scenegen list | awk '/^  (distractors|targets|quiet)_/ { print $1 }')
fi
exec target/debug/examples/false_alarms --edgeclip target/debug/edgeclip "${args[@]}" "$@"

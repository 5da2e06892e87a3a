#!/usr/bin/env bash
# Does the daemon keep up with a live 15 fps camera? (issue 3's speed check; a bench, not a test)
#
#   bash benches/daemon-keepup.sh [BINARY]     # default: target/release/edgeclip (built if missing)
#
# Runs firmware-config/demo.toml's model and prompts on the recorded 640x480 clip twice, as a live
# camera would deliver it (freshest-frame mode: frames that arrive while one is being encoded
# replace it and count as dropped):
#   1. files source replayed at 15 fps;
#   2. an MJPEG stream on a pipe, written at 15 fps by a shell loop (the pipe source's parser,
#      as with `rpicam-vid --codec mjpeg -o -` or ffmpeg).
# Prints the daemon's own summary line (frames, dropped, latency p50/p95, CPU use) for each.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/edgeclip}
[[ -x $bin ]] || cargo build --release
frames=(tests/data/clip/*.jpg)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The demo config with another source, rate and loop setting.
variant() { # SOURCE
  sed -e "s|^source = .*|source = \"$1\"|" -e 's|^fps = .*|fps = 15|' \
      -e "s|\.\./|$PWD/|g" firmware-config/demo.toml
}

# An MJPEG writer at 15 frames per second: what a camera pipe delivers.
cat >"$work/mjpeg15.sh" <<SH
#!/usr/bin/env bash
for f in $PWD/tests/data/clip/*.jpg; do cat "\$f"; sleep 0.0667; done
exec sleep 1000   # a camera does not hang up; the daemon is stopped with SIGTERM instead
SH
chmod +x "$work/mjpeg15.sh"

run() { # NAME CONFIG [SECONDS]: SIGTERM after SECONDS, for a source that never ends
  echo "== $1 (${#frames[@]} frames of 640x480 at 15 fps)"
  local limit=()
  [[ -n ${3:-} ]] && limit=(timeout -s TERM "$3")
  # timeout exits 124 after stopping the daemon, however cleanly the daemon ended.
  RUST_LOG=info "${limit[@]}" "$bin" run --config "$2" 2>"$work/log" >"$work/events" || (($? == 124))
  grep -E "stopped:" "$work/log" | sed "s/^.*stopped: /   /" || { echo "   no summary; log:"; tail -n 5 "$work/log"; }
  echo "   events: $(wc -l <"$work/events")"
}

variant "files:$PWD/tests/data/clip/*.jpg" >"$work/files.toml"
run "files source" "$work/files.toml"
variant "pipe:$work/mjpeg15.sh" | sed -e '/^loop = /d' -e 's/^\[camera\]/[camera]\nformat = "mjpeg"/' >"$work/pipe.toml"
run "MJPEG pipe" "$work/pipe.toml" 14

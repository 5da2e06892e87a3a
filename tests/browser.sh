#!/usr/bin/env bash
# The web page in a real browser: Debian's chromium, headless, against the daemon replaying the
# demo clip in a loop with [store], [snapshots] and [http] on (a token, a free port). Each page
# (Live, Events, Search, Tune) must load without a console message (an error, an uncaught
# exception, a failed load: the page's script logs nothing else), and its DOM, after the script
# ran, must show what the clip holds: the four labels, the red circle's events with their
# snapshots, search moments with their thumbnails, a proposed threshold's TOML lines. Screenshots of each page go to
# docs/img/web-PAGE.png (IMG_DIR to put them elsewhere). Run by .ci/run; needs chromium and curl.
#
#   bash tests/browser.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
edgeclip="${CARGO_TARGET_DIR:-$root/target}/debug/edgeclip"
img_dir=${IMG_DIR:-$root/docs/img}
browser=$(command -v chromium || command -v chromium-browser || true)
[[ -n $browser ]] || { echo "chromium is not installed (apt-get install chromium)"; exit 1; }
[[ -x $edgeclip ]] || cargo test --no-run --quiet
work=$(mktemp -d "${TMPDIR:-/tmp}/edgeclip-browser.XXXXXX")
token=browser-test-token-42
daemon_pid=""
cleanup() {
    [[ -n $daemon_pid ]] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    [[ ${KEEP_WORK:-0} == 1 ]] && echo "work folder kept: $work" || rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- daemon log (last 20 lines)"
    tail -n 20 "$work/daemon.log" | sed 's/^/  | /'
    exit 1
}

sed -e "s|\"files:../tests/data/clip/\*.jpg\"|\"files:$root/tests/data/clip/*.jpg\"|" \
    -e "s|\"../models/demo\"|\"$root/models/demo\"|" -e 's|loop = false|loop = true|' \
    firmware-config/demo.toml >"$work/edgeclip.toml"
cat >>"$work/edgeclip.toml" <<EOF

[events]
stdout = false

[snapshots]
enabled = true
dir = "snaps"

[store]
enabled = true
path = "store.sqlite"
sample_s = 0

[http]
enabled = true
listen = "127.0.0.1:0"
token = "$token"
EOF
# [events] is in demo.toml already: keep the later copy's key only.
python3 - "$work/edgeclip.toml" <<'PY'
import sys
p = sys.argv[1]
t = open(p).read()
t = t.replace("[events]\nstdout = true\n", "", 1)
open(p, "w").write(t)
PY

touch "$work/daemon.log"
XDG_CACHE_HOME=$work/cache RUST_LOG=info "$edgeclip" run --config "$work/edgeclip.toml" \
    >"$work/daemon.log" 2>&1 &
daemon_pid=$!
base=""
for _ in $(seq 600); do
    base=$(sed -n 's|.*serving the web page on \(http://[0-9.:]*\)/.*|\1|p' "$work/daemon.log" | head -1)
    [[ -n $base ]] && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited"
    sleep 0.2
done
[[ -n $base ]] || fail "the server did not start"
echo "daemon serving on $base"
# Until the red circle's start (with its snapshot) is in the store.
for _ in $(seq 600); do
    curl -s "$base/api/events?label=red_circle&token=$token" | grep -q snapshot_url\":\"/ && break
    sleep 0.2
done

mkdir -p "$img_dir"
failed=0
# page NAME PATH NEEDLE...: loads the page, checks its console and its DOM, takes its screenshot.
page() {
    local name=$1 path=$2
    shift 2
    local url="$base$path"
    url+=$([[ $path == *\?* ]] && echo "&" || echo "?")"token=$token"
    local flags=(--headless --no-sandbox --disable-gpu --disable-background-networking
        --disable-component-update --disable-sync --no-first-run --hide-scrollbars
        --user-data-dir="$(mktemp -d "$work/profile.XXXXXX")" --virtual-time-budget=4000
        --window-size=1040,700 --enable-logging=stderr --v=0)
    timeout 120 "$browser" "${flags[@]}" --dump-dom "$url" >"$work/$name.html" 2>"$work/$name.log" || true
    local problems=()
    if grep -a "CONSOLE" "$work/$name.log" >"$work/$name.console"; then
        problems+=("console messages: $(head -c 600 "$work/$name.console")")
    fi
    [[ -s $work/$name.html ]] || problems+=("no DOM dumped: $(tail -c 600 "$work/$name.log")")
    local needle
    for needle in "$@"; do
        grep -qF -- "$needle" "$work/$name.html" || problems+=("the DOM lacks: $needle")
    done
    timeout 120 "$browser" "${flags[@]}" --screenshot="$img_dir/web-$name.png" "$url" \
        >/dev/null 2>&1 || problems+=("no screenshot")
    if ((${#problems[@]})); then
        failed=1
        echo "--- $name: FAILED"
        printf '  %s\n' "${problems[@]}"
    else
        echo "--- $name: passed ($(stat -c %s "$img_dir/web-$name.png") byte screenshot)"
    fi
}

page live /live 'data-label="red_circle"' 'data-label="orange_triangle"' 'processed, scores as prob'
page events "/events?label=red_circle" 'class="event" data-label="red_circle" data-type="start"' \
    '/api/snapshot?path='
page search "/search?q=a+photo+of+a+red+circle" 'class="moment"' 'for "a photo of a red circle"' \
    '/api/thumbnail?id='
page tune "/tune?q=a+photo+of+a+red+circle" '[[prompts]]' 'text = "a photo of a red circle"' \
    'stored frames scored'
((failed == 0)) || fail "a page failed"
echo "4 passed, 0 failed"

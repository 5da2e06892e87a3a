#!/usr/bin/env bash
# Kill loop (issue 26): the daemon with the store on, replaying the demo clip (looped, 30 fps,
# every frame stored, a thumbnail a second: the writer commits all the time), is SIGKILLed at a
# random moment 0.3 to 3 s after its store opened, KILL_RUNS times (default 50). After each kill,
# python3's sqlite3 opens the database and runs `PRAGMA integrity_check`, and the next round
# restarts the daemon on the same file, which must open it as it is (no "moved ... aside"). Prints
# a line per kill and the counts. A bench, not a test: not in CI.
#
#   bash benches/store-kill.sh          # 50 kills
#   KILL_RUNS=5 bash benches/store-kill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${KILL_RUNS:-50}
[[ -x target/debug/edgeclip ]] || { echo "build first: cargo test --no-run"; exit 1; }
export TMPDIR=${KILL_TMP:-$PWD/target}
source tests/faults/lib.sh

db=$work/store.sqlite
sed -e "s|\.\./|$PWD/|g" -e 's|^loop = false.*|loop = true|' -e 's/^fps = 15/fps = 30/' \
    firmware-config/demo.toml >"$work/demo.toml"
printf '\n[store]\nenabled = true\npath = "%s"\nsample_s = 0\nthumbnail_s = 1\n' "$db" >>"$work/demo.toml"

ok=0 bad=0 aside=0 prev=0 grew=0
for ((i = 1; i <= runs; i++)); do
    : >"$work/daemon.log"
    start_daemon "$work/demo.toml"
    wait_for "$work/daemon.log" 'store: .*sqlite' 60
    grep -q 'moved to' "$work/daemon.log" && aside=$((aside + 1))
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 3.0), 2))')"
    kill -9 "$daemon_pid"
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
    read -r check frames thumbs < <(python3 - "$db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
ok = db.execute("PRAGMA integrity_check").fetchone()[0]
frames = db.execute("SELECT count(*) FROM frames").fetchone()[0]
thumbs = db.execute("SELECT count(*) FROM thumbnails").fetchone()[0]
print(ok.replace(" ", "_"), frames, thumbs)
PY
    )
    if [[ $check == ok ]]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    ((frames > prev)) && grew=$((grew + 1))
    printf 'kill %2d: integrity %s, %6d frames (+%d), %4d thumbnails\n' "$i" "$check" "$frames" \
        $((frames - prev)) "$thumbs"
    prev=$frames
done
# A last start on the file: it must open it and go on.
: >"$work/daemon.log"
start_daemon "$work/demo.toml"
wait_for "$work/daemon.log" 'store: .*sqlite' 60
sleep 1
stop_daemon TERM
grep -q 'moved to' "$work/daemon.log" && aside=$((aside + 1))
echo "kills: $runs; integrity ok after $ok, damaged after $bad; frames grew in $grew rounds;" \
    "files moved aside at restart: $aside; last clean stop: exit $daemon_status"
[[ $bad == 0 && $aside == 0 && $daemon_status == 0 ]]

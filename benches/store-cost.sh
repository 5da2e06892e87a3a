#!/usr/bin/env bash
# The store's costs (issue 26): the daemon replays the demo clip (looped) at 15 fps for COST_S
# seconds (default 60) in three runs: the store off; on with the defaults (a frame a second, a
# thumbnail a minute, plus changes and event starts); and on storing every frame with a
# thumbnail every second (the worst a config can ask at 15 fps). For each: the store writer
# thread's CPU time (`/proc/PID/task/TID/stat` of the thread named edgeclip-store) as % of one
# core, the whole process's CPU, its resident memory at the end (VmRSS) and its peak (VmHWM),
# and what the store holds. The first 5 s are left out of the CPU numbers (start-up). A bench,
# not a test: not in CI.
#
#   bash benches/store-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${COST_S:-60}
[[ -x target/debug/edgeclip ]] || { echo "build first: cargo test --no-run"; exit 1; }
export TMPDIR=${COST_TMP:-$PWD/target}
source tests/faults/lib.sh

# ticks PID [THREAD_NAME]: utime + stime (1/100 s) of the process, or of its thread so named.
ticks() {
    local pid=$1 name=${2:-} t
    if [[ -z $name ]]; then
        awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat"
        return
    fi
    for t in /proc/"$pid"/task/*; do
        if [[ $(cat "$t/comm") == "$name" ]]; then
            awk '{sub(/.*\) /, ""); print $12 + $13}' "$t/stat"
            return
        fi
    done
    echo 0
}

run() {
    local name=$1 store=$2
    local config=$work/$name.toml db=$work/$name.sqlite
    sed -e "s|\.\./|$PWD/|g" -e 's|^loop = false.*|loop = true|' firmware-config/demo.toml >"$config"
    if [[ $store == on ]]; then
        printf '\n[store]\nenabled = true\npath = "%s"\n%s\n' "$db" "${3:-}" >>"$config"
    fi
    : >"$work/daemon.log"
    start_daemon "$config"
    wait_for "$work/daemon.log" 'capturing from' 60
    sleep 5
    local w0 p0 t0
    w0=$(ticks "$daemon_pid" edgeclip-store)
    p0=$(ticks "$daemon_pid")
    t0=$(date +%s.%N)
    sleep "$secs"
    local w1 p1 t1 rss hwm
    w1=$(ticks "$daemon_pid" edgeclip-store)
    p1=$(ticks "$daemon_pid")
    t1=$(date +%s.%N)
    rss=$(rss_kb "$daemon_pid")
    hwm=$(peak_rss_kb "$daemon_pid")
    stop_daemon TERM
    local held="-"
    if [[ $store == on ]]; then
        held=$(python3 -c '
import sqlite3, sys, os
db = sqlite3.connect(sys.argv[1])
f = db.execute("SELECT count(*) FROM frames").fetchone()[0]
t = db.execute("SELECT count(*), coalesce(avg(length(jpeg)), 0) FROM thumbnails").fetchone()
print(f"{f} frames, {t[0]} thumbnails of {t[1]:.0f} B, {os.path.getsize(sys.argv[1]) / 1e6:.2f} MB")
' "$db")
    fi
    python3 -c '
import sys
name, w0, w1, p0, p1, t0, t1, rss, hwm, held = sys.argv[1:]
wall = float(t1) - float(t0)
print(f"{name:>9}: writer {100 * (float(w1) - float(w0)) / 100 / wall:5.2f}% of a core, "
      f"process {100 * (float(p1) - float(p0)) / 100 / wall:5.1f}%, RSS {int(rss) / 1024:.1f} MB "
      f"(peak {int(hwm) / 1024:.1f} MB); {held}")
' "$name" "$w0" "$w1" "$p0" "$p1" "$t0" "$t1" "$rss" "$hwm" "$held"
    grep -E 'store: [0-9]+ records written' "$work/daemon.log" | sed 's/^/           /' || true
}

echo "15 fps, ${secs} s each, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run off off
run defaults on
run every on $'sample_s = 0\nthumbnail_s = 1'

#!/usr/bin/env bash
# Soak (issue 25): the daemon on the demo clip, looped and lossless (every frame through the model,
# as fast as it goes), publishing to a mosquitto that is SIGKILLed and restarted every minute.
# Every 10 s it samples the daemon's resident memory, threads and open files; at the end it prints
# the table and a verdict (last minute against the first), and checks that every event the daemon
# accepted reached a subscriber (tests/faults/check_events.py; a subscriber is started again after
# each broker restart, as tests/faults/broker-killed.sh does). A bench, not a test: not in CI.
#
#   bash benches/soak.sh                 # 10 minutes
#   SOAK_MINUTES=2 bash benches/soak.sh  # shorter
#
# Flat means: the last minute's highest RSS within SOAK_RSS_MB (default 5 MB) of the first
# minute's highest, and no more threads nor open files than in the first minute.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${SOAK_MINUTES:-10}
tolerance_mb=${SOAK_RSS_MB:-5}
cargo test --no-run --quiet 2>/dev/null || { echo "cannot build the daemon"; exit 1; }
# The work folder lives under target/, not /tmp: a first run lost its files to a cleanup of
# /tmp/edgeclip-fault.* by another job sharing the machine.
export TMPDIR=${SOAK_TMP:-$PWD/target}
source tests/faults/lib.sh

start_broker
record "$work/live.0.txt"
demo_config "$work/soak.toml"
sed -i -e 's|^fps = .*|fps = 1000|' "$work/soak.toml"
sed -i -e 's|^interval_s = .*|interval_s = 60|' "$work/soak.toml"
start_daemon "$work/soak.toml" --lossless
wait_for "$work/daemon.log" 'capturing from' 60
started=$SECONDS
printf '%6s %8s %8s %6s %10s %8s\n' t_s rss_mb hwm_mb thr fds events | tee "$work/samples.txt"
sample() {
    local status=/proc/$daemon_pid/status
    [[ -r $status ]] || fail "the daemon is gone"
    printf '%6d %8.1f %8.1f %6d %10d %8d\n' $((SECONDS - started)) \
        "$(awk '/^VmRSS:/ {print $2 / 1024}' "$status")" \
        "$(awk '/^VmHWM:/ {print $2 / 1024}' "$status")" \
        "$(awk '/^Threads:/ {print $2}' "$status")" \
        "$(ls "/proc/$daemon_pid/fd" | wc -l)" \
        "$(count "$work/stdout.jsonl" '"type":"(start|end)"')" | tee -a "$work/samples.txt"
}
for ((m = 1; m <= minutes; m++)); do
    for _ in 1 2 3 4 5 6; do
        sleep 10
        sample
    done
    if ((m < minutes)); then
        kill_broker KILL
        stop_recorders
        sleep 4.5
        start_broker
        record "$work/live.$m.txt"
    fi
done
# Let the delivery queue drain, then stop.
sleep 5
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
cat "$work"/live.*.txt >"$work/live.txt"
delivered=$(python3 tests/faults/check_events.py "$work") || fail "events lost: $delivered"

# The verdict: the first minute's samples against the last minute's.
python3 - "$work/samples.txt" "$tolerance_mb" "$delivered" "$(grep 'stopped:' "$work/daemon.log")" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
rows = [(int(t), float(r), float(h), int(th), int(fd), int(ev)) for t, r, h, th, fd, ev in rows]
first, last = rows[:6], rows[-6:]
tol = float(sys.argv[2])
rss = (max(r[1] for r in first), max(r[1] for r in last))
thr = (max(r[3] for r in first), max(r[3] for r in last))
fds = (max(r[4] for r in first), max(r[4] for r in last))
flat = rss[1] - rss[0] <= tol and thr[1] <= thr[0] and fds[1] <= fds[0]
print(f"first minute -> last minute: RSS max {rss[0]:.1f} -> {rss[1]:.1f} MB "
      f"(peak {rows[-1][2]:.1f} MB), threads max {thr[0]} -> {thr[1]}, open files max {fds[0]} -> {fds[1]}")
print(f"events: {sys.argv[3]}")
print(sys.argv[4].split("] ", 1)[-1])
print(f"verdict: {'FLAT' if flat else 'GROWING'} (tolerance {tol:g} MB of RSS, no new threads or files)")
sys.exit(0 if flat else 1)
PY

# The broker is down when the daemon starts and comes up 4 s later: the daemon runs all along
# (events on stdout), connects when the broker appears, and every event it accepted meanwhile
# reaches the subscriber, in order.
demo_config "$work/demo.toml"
start_daemon "$work/demo.toml"
wait_for "$work/stdout.jsonl" '"type":"start"' 30
sleep 2
start_broker
record "$work/live.txt"
wait_for "$work/live.txt" "^$avail 0 online" 30
sleep 3
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
sleep 0.5
python3 tests/faults/check_events.py "$work" || fail "events lost"
grep -q "$avail 0 offline" "$work/live.txt" || fail "no offline on a clean stop"

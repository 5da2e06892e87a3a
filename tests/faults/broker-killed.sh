# The broker is killed with SIGKILL mid-stream and restarted 4.5 s later (no persistence: it forgets
# every session and retained message). The daemon keeps detecting; after reconnecting it resends
# what was not acknowledged, and republishes its availability and label states: 0 accepted events
# lost, order kept, the retained states equal the daemon's, and the events that waited for the
# broker carry "replayed":true.
start_broker
record "$work/live.txt"
demo_config "$work/demo.toml"
start_daemon "$work/demo.toml"
wait_for "$work/live.txt" '/events 0 \{"type":"start"' 30
kill_broker KILL
stop_recorders
starts_before=$(count "$work/stdout.jsonl" '"type":"start"')
# The daemon retries after 0.25, 0.75, 1.75, 3.75 and 7.75 s: back at 4.5 s, the new subscriber
# is in place long before the daemon reconnects and resends.
sleep 4.5
away=$(count "$work/stdout.jsonl" '"type":"(start|end)"')
start_broker
record "$work/live.txt.2"
# Events the daemon accepted while the broker was away.
[[ $(count "$work/stdout.jsonl" '"type":"start"') -gt $starts_before ]] ||
    note "(no start event while the broker was away this time)"
wait_for "$work/live.txt.2" "^$avail 0 online" 60
wait_for "$work/live.txt.2" '/events 0 \{"type":"end"' 30
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
if [[ $away -gt $(count "$work/live.txt" '/events 0 ') ]]; then
    grep -q '/events 0 .*"replayed":true' "$work/live.txt.2" || fail "no resent event marked replayed"
fi
cat "$work/live.txt.2" >>"$work/live.txt"
python3 tests/faults/check_events.py "$work" || fail "events lost or reordered across the broker's death"
retained "$work/retained.txt"
grep -q "^$avail 1 offline" "$work/retained.txt" || fail "availability not retained offline after the stop"
states=$(count "$work/retained.txt" '/state 1 ')
[[ $states -ge 4 ]] || fail "only $states label states retained by the restarted broker"
[[ $(count "$work/retained.txt" '/state 1 ON') == 0 ]] || fail "a label retained ON after the daemon stopped"

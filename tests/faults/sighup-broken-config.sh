# SIGHUP after the config file was broken: the daemon logs an error naming the file and the
# problem, keeps running on its old prompts, and takes the config again once it is fixed; Home
# Assistant then gets a discovery config for the new label, and the removed one's is deleted.
start_broker
record "$work/live.txt"
demo_config "$work/demo.toml"
cp "$work/demo.toml" "$work/good.toml"
start_daemon "$work/demo.toml"
wait_for "$work/stdout.jsonl" '"label":"red_circle"' 30
printf '\n[[prompts]]\nlabel = "broken"\ntext = \n' >>"$work/demo.toml"
kill -HUP "$daemon_pid"
wait_for "$work/daemon.log" 'reload failed, keeping the current prompts' 15
grep -q "demo.toml" "$work/daemon.log" || fail "the reload error does not name the file"
kill -0 "$daemon_pid" || fail "the daemon died on a broken config"
# Still detecting with the old prompts: a new start event after the failed reload.
starts=$(count "$work/stdout.jsonl" '"type":"start"')
for _ in $(seq 300); do
    [[ $(count "$work/stdout.jsonl" '"type":"start"') -gt $starts ]] && break
    sleep 0.1
done
[[ $(count "$work/stdout.jsonl" '"type":"start"') -gt $starts ]] || fail "no event after the failed reload"
# Fixed, with one label renamed: the next SIGHUP takes it.
sed 's/label = "red_circle"/label = "red"/' "$work/good.toml" >"$work/demo.toml"
kill -HUP "$daemon_pid"
wait_for "$work/daemon.log" 'prompts reloaded: 4 labels' 15
wait_for "$work/stdout.jsonl" '"label":"red"' 30
wait_for "$work/live.txt" '^homeassistant/binary_sensor/edgeclip_demo/red/config 0 \{' 15
wait_for "$work/live.txt" '^homeassistant/binary_sensor/edgeclip_demo/red_circle/config 0 $' 15
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "exit status $daemon_status after SIGTERM"

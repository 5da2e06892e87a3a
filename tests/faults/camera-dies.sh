# The camera dies and comes back. The `pipe:` camera command serves the red circle (frames
# 20-40 of the clip, in a loop, at about 15 fps); while a flag file exists it exits with an
# error at once, so every restart fails. The daemon must see the camera go offline (the
# command exited: at once, not after camera.offline_after_s), end the active label (its end
# event), say so in the log once (the repeated exits rate-limited to one line), and when the
# flag is gone and the command runs again, say online and detect again (a new start event).
# On MQTT, edgeclip/demo/availability goes online, offline once (after the label's state OFF),
# online again, and is retained online until the clean stop makes it offline; the device's own
# availability stays online throughout.
frames="$root/tests/data/clip"
cat >"$work/camera.sh" <<CAM
#!/bin/sh
echo "run" >>"$work/camera-runs"
if [ -e "$work/camera-down" ]; then echo "camera: not there" >&2; exit 3; fi
while :; do
    for i in \$(seq 20 40); do
        if [ -e "$work/camera-down" ]; then echo "camera: lost" >&2; exit 3; fi
        cat "$frames/frame_00\$i.jpg"
        sleep 0.066
    done
done
CAM
chmod +x "$work/camera.sh"
demo_config "$work/demo.toml"
sed -i -e "s|^source = .*|source = \"pipe:$work/camera.sh\"\noffline_after_s = 3|" -e '/^loop = /d' "$work/demo.toml"
start_broker
record "$work/mqtt.txt"
start_daemon "$work/demo.toml"
events="$work/stdout.jsonl"
wait_for "$work/daemon.log" 'camera demo: online' 120
wait_for "$events" '"type":"start".*"label":"red_circle"' 60
note "camera online, red_circle started"

touch "$work/camera-down"
runs_before=$(wc -l <"$work/camera-runs")
wait_for "$events" '"type":"end".*"label":"red_circle"' 30
wait_for "$work/daemon.log" 'camera demo: offline: .*exited \(exit status: 3\)' 10
# Let the failing command be restarted a few times (backoff 0.5 s, 1 s, 2 s, ...).
for _ in $(seq 150); do
    [[ $(($(wc -l <"$work/camera-runs") - runs_before)) -ge 3 ]] && break
    sleep 0.1
done
failed_runs=$(($(wc -l <"$work/camera-runs") - runs_before))
[[ $failed_runs -ge 3 ]] || fail "the dead camera command was restarted $failed_runs times in 15 s"
[[ $(count "$events" '"type":"start"') == 1 ]] || fail "a start event while the camera was offline"
[[ $(count "$work/daemon.log" 'camera demo: offline') == 1 ]] || fail "the offline line is not logged exactly once"
exits=$(count "$work/daemon.log" 'camera\.sh: pipe `.*exited \(exit status: 3\)')
[[ $exits == 1 ]] || fail "the command's $failed_runs failed runs gave $exits log lines, not one (rate limit)"
note "camera offline: red_circle ended, 1 log line for $failed_runs failed restarts"

rm "$work/camera-down"
for _ in $(seq 300); do
    [[ $(count "$work/daemon.log" 'camera demo: online') -ge 2 ]] && break
    kill -0 "$daemon_pid" || fail "the daemon died"
    sleep 0.1
done
[[ $(count "$work/daemon.log" 'camera demo: online') == 2 ]] || fail "the camera did not come back online"
for _ in $(seq 300); do
    [[ $(count "$events" '"type":"start".*"label":"red_circle"') -ge 2 ]] && break
    sleep 0.1
done
[[ $(count "$events" '"type":"start".*"label":"red_circle"') == 2 ]] || fail "no new start event after the camera came back"
note "camera online again, red_circle started again"
retained "$work/retained.txt"
grep -qx 'edgeclip/demo/availability 1 online' "$work/retained.txt" ||
    fail "edgeclip/demo/availability not retained online after the camera came back"
# The camera's availability in order, and the label's state before the camera's offline.
seq=$(grep -E '^edgeclip/demo/(availability|red_circle/state) ' "$work/mqtt.txt" | cut -d' ' -f1,3 |
    sed -e 's|edgeclip/demo/availability|camera|' -e 's|edgeclip/demo/red_circle/state|red|' | tr '\n' ' ')
note "on MQTT: $seq"
[[ $seq =~ camera\ online.*red\ ON.*red\ OFF\ camera\ offline\ camera\ online.*red\ ON ]] ||
    fail "edgeclip/demo/availability and red_circle's state not in the expected order: $seq"
[[ $(grep -c '^edgeclip/demo/availability 0 offline' "$work/mqtt.txt") == 1 ]] ||
    fail "the camera's offline not published exactly once while it was down"
grep -q "^$avail 0 offline" "$work/mqtt.txt" && fail "the device's availability went offline with the camera"
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "exit status $daemon_status after SIGTERM"
starts=$(count "$events" '"type":"start"')
ends=$(count "$events" '"type":"end"')
[[ $starts == "$ends" ]] || fail "$starts start events but $ends end events"
retained "$work/retained.txt"
grep -qx 'edgeclip/demo/availability 1 offline' "$work/retained.txt" ||
    fail "edgeclip/demo/availability not retained offline after the stop"

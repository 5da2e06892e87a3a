# The camera command hangs (writes two frames, then sleeps with its stdout open): after three
# capture timeouts in a row the daemon kills it and starts it again; each run's frames are
# processed. camera.timeout_s = 1, so this takes a few seconds.
frames="$root/tests/data/clip"
cat >"$work/camera.sh" <<CAM
#!/bin/sh
echo "run" >>"$work/camera-runs"
cat "$frames/frame_0040.jpg" "$frames/frame_0041.jpg"
exec sleep 1000.$port
CAM
chmod +x "$work/camera.sh"
demo_config "$work/demo.toml"
sed -i -e "s|^source = .*|source = \"pipe:$work/camera.sh\"\ntimeout_s = 1|" -e '/^loop = /d' "$work/demo.toml"
start_daemon "$work/demo.toml"
for _ in $(seq 200); do
    [[ $(cat "$work/camera-runs" 2>/dev/null | wc -l) -ge 3 ]] && break
    sleep 0.1
done
runs=$(cat "$work/camera-runs" 2>/dev/null | wc -l)
[[ $runs -ge 3 ]] || fail "the hung command was started $runs times in 20 s, not restarted"
grep -q 'killing the command to restart it' "$work/daemon.log" || fail "no log line says the hung command is killed"
note "camera command started $runs times; the daemon is alive"
kill -0 "$daemon_pid" || fail "the daemon died"
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "exit status $daemon_status after SIGTERM"
sleep 0.5
left=$(pgrep -cfx "sleep 1000.$port" || true)
[[ $left == 0 ]] || fail "$left hung camera command(s) left running after the daemon stopped"

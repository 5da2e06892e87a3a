# Issue 25: the camera's pipe sends a JPEG bomb between normal frames: a valid 1.5 MB progressive
# JPEG declaring 16000x16000 (tests/faults/make_bomb.py), which used to take the daemon to 1.5 GB
# resident. It must cost one counted bad frame and no memory: the same camera is run twice, without
# and with the bomb, and the peak RSS (VmHWM) of the run with the bomb stays within 50 MB of the
# run without; the log names the source and the declared size; frames after the bomb are
# processed and make events.
frames="$root/tests/data/clip"
python3 tests/faults/make_bomb.py "$work/bomb.jpg"
# camera.sh BOMB: the clip at about 20 fps, the bomb after frame 89 when BOMB=1 (with a pause, so
# that it is the freshest frame long enough to be taken), the clip again, then silence.
cat >"$work/camera.sh" <<CAM
#!/bin/bash
i=0
for f in "$frames"/frame_*.jpg "$frames"/frame_*.jpg; do
    cat "\$f"
    i=\$((i + 1))
    if [[ \$i == 90 && \$1 == 1 ]]; then sleep 0.5; cat "$work/bomb.jpg"; sleep 1; fi
    sleep 0.05
done
echo done >"$work/camera-done"
exec sleep 1000.$port
CAM
chmod +x "$work/camera.sh"
start_broker
# run_camera BOMB: one daemon run over the camera; sets peak_kb (VmHWM) and keeps the log as
# daemon.BOMB.log and the events as stdout.BOMB.jsonl.
run_camera() {
    rm -f "$work/camera-done" "$work/daemon.log" "$work/stdout.jsonl"
    demo_config "$work/demo.$1.toml"
    sed -i -e "s|^source = .*|source = \"pipe:$work/camera.sh $1\"\nwidth = 640\nheight = 480|" \
        -e '/^loop = /d' "$work/demo.$1.toml"
    start_daemon "$work/demo.$1.toml"
    wait_for "$work/camera-done" '' 120
    sleep 1
    peak_kb=$(peak_rss_kb "$daemon_pid")
    stop_daemon TERM
    [[ $daemon_status == 0 ]] || fail "run $1: exit status $daemon_status after SIGTERM"
    cp "$work/daemon.log" "$work/daemon.$1.log"
    cp "$work/stdout.jsonl" "$work/stdout.$1.jsonl"
}
run_camera 0
normal_kb=$peak_kb
run_camera 1
bomb_kb=$peak_kb
note "peak RSS: $((normal_kb / 1024)) MB without the bomb, $((bomb_kb / 1024)) MB with it"
[[ $((bomb_kb - normal_kb)) -le $((50 * 1024)) ]] ||
    fail "the bomb cost $(((bomb_kb - normal_kb) / 1024)) MB of peak RSS (limit 50 MB)"
line=$(grep -m1 'declares 16000x16000 pixels' "$work/daemon.1.log") ||
    fail "no log line refuses the 16000x16000 frame"
note "log: ${line#* WARN }"
[[ $line == *"camera demo (pipe:$work/camera.sh 1): frame "*"over this camera's limit of 3840x3840"* ]] ||
    fail "the refusal does not name the source and the limit: $line"
grep -qE 'stopped: .*, 1 bad,' "$work/daemon.1.log" ||
    fail "the bomb is not counted as one bad frame: $(grep 'stopped:' "$work/daemon.1.log")"
grep -qE 'stopped: .*, 0 bad,' "$work/daemon.0.log" || fail "bad frames in the run without the bomb"
bomb_seq=$(sed -nE 's/.*: frame ([0-9]+): declares 16000x16000.*/\1/p' "$work/daemon.1.log" | head -1)
after=$(python3 -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get("frame", -1) > int(sys.argv[2])))' \
    "$work/stdout.1.jsonl" "$bomb_seq")
note "bomb at frame $bomb_seq; $after events after it"
[[ $after -ge 2 ]] || fail "only $after events after the bomb (frame $bomb_seq)"

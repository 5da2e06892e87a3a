# The daemon is killed with SIGKILL: the broker publishes its last will (availability offline,
# retained). Started again, it says online and republishes every label's state (retained).
start_broker
record "$work/live.txt"
# keep-alive 5 s: the broker notices the dead client within 1.5 keep-alives.
demo_config "$work/demo.toml"
sed -i 's/^qos = 1$/qos = 1\nkeep_alive_s = 5/' "$work/demo.toml"
start_daemon "$work/demo.toml"
wait_for "$work/live.txt" '/state 0 ON' 30
stop_daemon KILL
# A SIGKILLed process's socket is closed by the kernel: mosquitto sends the will at once.
wait_for "$work/live.txt" "^$avail 0 offline" 15
retained "$work/retained.txt"
grep -q "^$avail 1 offline" "$work/retained.txt" || fail "the last will is not retained"
on_before=$(grep -c '/state 1 ON' "$work/retained.txt" || true)
note "retained after the kill: availability offline, $on_before label(s) still ON (the daemon had no chance to say)"
# Restart: online again, and every label's state is republished.
: >"$work/live.txt"
start_daemon "$work/demo.toml"
wait_for "$work/live.txt" "^$avail 0 online" 30
wait_for "$work/live.txt" 'orange_triangle/state 0 (ON|OFF)' 30
for label in red_circle blue_square yellow_star orange_triangle; do
    grep -qE "^edgeclip/demo/$label/state 0 (ON|OFF)" "$work/live.txt" || fail "$label's state not republished on restart"
done
stop_daemon TERM

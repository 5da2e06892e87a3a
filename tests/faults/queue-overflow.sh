# The broker is away longer than a small queue (mqtt.queue = 4) lasts: the daemon keeps
# detecting, drops the oldest episodes whole (a start with its end) and counts them; when the
# broker is back it sends what it kept, in order, marked "replayed", and republishes the states.
# What must hold: no crash; every event the daemon printed reached the subscriber or was counted
# as dropped (delivered + dropped = printed); no end reaches the subscriber without its start;
# the drops show in the stats on stdout and on edgeclip/demo/stats; and the retained states
# equal the daemon's (the last state per label on stdout).
mqtt_extra='queue = 4'
start_broker
record "$work/live.txt"
demo_config "$work/demo.toml"
# Faster frames (more events while the broker is away) and a stats line every second.
sed -i -e 's/^fps = 15/fps = 30/' -e 's/^interval_s = 5/interval_s = 1/' "$work/demo.toml"
start_daemon "$work/demo.toml"
wait_for "$work/live.txt" '/events 0 \{"type":"start"' 30
kill_broker KILL
stop_recorders
before=$(count "$work/stdout.jsonl" '"type":"(start|end)"')
# Away until 4 + 8 more events were printed: at least 8 of them cannot be kept.
for _ in $(seq 1200); do
    [[ $(count "$work/stdout.jsonl" '"type":"(start|end)"') -ge $((before + 12)) ]] && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon died while the broker was away"
    sleep 0.1
done
away=$(($(count "$work/stdout.jsonl" '"type":"(start|end)"') - before))
[[ $away -ge 12 ]] || fail "only $away events while the broker was away"
note "$away events printed while the broker was away"
start_broker
record "$work/live.txt.2"
wait_for "$work/live.txt.2" "^$avail 0 online" 60
wait_for "$work/live.txt.2" '^edgeclip/demo/stats 0 .*"events_dropped":[1-9]' 30
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
cat "$work/live.txt.2" >>"$work/live.txt"
retained "$work/retained.txt"
# The total the sink logged with its last drop ("... N dropped so far").
dropped=$(grep -oE '[0-9]+ dropped so far' "$work/daemon.log" | tail -n 1 | cut -d' ' -f1)
[[ -n $dropped && $dropped -gt 0 ]] || fail "no drop logged"
python3 - "$work" "$dropped" <<'PY' || fail "queue overflow check failed"
import json, sys
work, dropped = sys.argv[1], int(sys.argv[2])
printed, stats = [], []
for line in open(f"{work}/stdout.jsonl"):
    o = json.loads(line)
    (stats if o["type"] == "stats" else printed).append(o)
key = lambda e: (e["type"], e["label"], e["frame"], e["ts"])
seen, keys = [], set()
replayed = 0
for line in open(f"{work}/live.txt", encoding="utf-8"):
    topic, _, payload = line.rstrip("\n").split(" ", 2)
    if topic == "edgeclip/demo/events":
        e = json.loads(payload)
        replayed += e.get("replayed", False) is True
        if key(e) not in keys:
            keys.add(key(e))
            seen.append(e)
errors = []
printed_keys = [key(e) for e in printed]
if len(seen) + dropped != len(printed):
    errors.append(f"{len(seen)} delivered + {dropped} dropped != {len(printed)} printed")
if any(key(e) not in set(printed_keys) for e in seen):
    errors.append("the subscriber got an event the daemon never printed")
order = [k for k in printed_keys if k in keys]
if [key(e) for e in seen] != order:
    errors.append("events out of order")
if replayed == 0:
    errors.append("no event marked replayed")
for label in {e["label"] for e in printed}:
    kinds = [e["type"] for e in seen if e["label"] == label]
    for i, k in enumerate(kinds):
        if k == "end" and (i == 0 or kinds[i - 1] != "start"):
            errors.append(f"{label}: an end without its start: {kinds}")
            break
# The drops in the daemon's own stats lines (stdout).
counted = max((s.get("events_dropped", 0) for s in stats), default=0)
if not 0 < counted <= dropped:
    errors.append(f"stdout stats count {counted} dropped events, the sink {dropped}")
# Retained states: the last state per label on stdout.
retained = {}
for line in open(f"{work}/retained.txt", encoding="utf-8"):
    topic, _, payload = line.rstrip("\n").split(" ", 2)
    retained[topic] = payload
for label in {e["label"] for e in printed}:
    last = [e["type"] for e in printed if e["label"] == label][-1]
    want = "ON" if last == "start" else "OFF"
    got = retained.get(f"edgeclip/demo/{label}/state")
    if got != want:
        errors.append(f"{label}: retained {got}, the daemon's last event says {want}")
if errors:
    print("  " + "\n  ".join(errors))
    sys.exit(1)
print(f"  {len(printed)} printed, {len(seen)} delivered ({replayed} replayed), {dropped} dropped "
      f"(stats: {counted}); retained states equal the daemon's")
PY
grep -q "^$avail 1 offline" "$work/retained.txt" || fail "device availability not offline after the stop"
grep -q '^edgeclip/demo/availability 1 offline' "$work/retained.txt" || fail "camera availability not offline after the stop"

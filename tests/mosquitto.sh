#!/usr/bin/env bash
# End-to-end check with a broker and a client nobody on the team wrote: mosquitto and
# mosquitto_sub. The daemon replays the demo clip through the demo model and publishes to a
# mosquitto on a loopback port; mosquitto_sub records every topic, retain flag and payload (in hex:
# snapshots are JPEG bytes), live and then retained after the daemon exited. The camera also has a
# zone `whole` (the whole frame as a crop, watching red_circle): its events, states and snapshot go
# to the zone's topics (`edgeclip/demo/whole/red_circle/...`) while the zone `all` keeps the names
# it had before zones. Run by .ci/run (needs mosquitto and mosquitto-clients).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do mosquitto_pub -h 127.0.0.1 -p "$port" -t probe -m x 2>/dev/null && break; sleep 0.1; done

# The shipped demo config, with absolute paths and an [mqtt] section.
sed -e "s|\.\./|$root/|g" firmware-config/demo.toml >"$work/demo.toml"
printf '\n[mqtt]\nhost = "127.0.0.1"\nport = %s\nprefix = "edgeclip"\nqos = 1\nhomeassistant_discovery = true\ndevice = "ci"\n' "$port" >>"$work/demo.toml"
printf '\n[snapshots]\ndir = "%s/snapshots"\n' "$work" >>"$work/demo.toml"
printf '\n[[camera.zones]]\nname = "whole"\nrect = [0, 0, 1, 1]\nlabels = ["red_circle"]\n' >>"$work/demo.toml"

mosquitto_sub -h 127.0.0.1 -p "$port" -t 'edgeclip/#' -t 'homeassistant/#' -v -F '%t %r %x' >"$work/live.txt" &
pids+=($!)
sleep 0.5
# The binary `cargo test` built (same features: a plain `cargo build` would rebuild tract).
cargo test --no-run --quiet 2>/dev/null
RUST_LOG=info "${CARGO_TARGET_DIR:-target}/debug/edgeclip" run --config "$work/demo.toml" --lossless >"$work/stdout.jsonl" 2>"$work/daemon.log" ||
  { cat "$work/daemon.log"; echo "daemon failed"; exit 1; }
sleep 1
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'edgeclip/#' -t 'homeassistant/#' -v -F '%t %r %x' -W 2 >"$work/retained.txt" 2>/dev/null || true

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def lines(name):
    out = []
    for l in open(f"{work}/{name}", encoding="utf-8"):
        topic, retain, payload = l.rstrip("\n").split(" ", 2)
        raw = bytes.fromhex(payload)
        # Snapshots stay bytes; everything else is text.
        out.append((topic, retain, raw if topic.endswith("/snapshot") else raw.decode()))
    return out
live, retained = lines("live.txt"), lines("retained.txt")
stdout_events = [e for e in map(json.loads, open(f"{work}/stdout.jsonl")) if e["type"] != "stats"]
# An event accepted before the first connect is sent marked "replayed" (it waited for the broker).
unmark = lambda e: {k: v for k, v in e.items() if k != "replayed"}
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

events = [unmark(json.loads(p)) for t, r, p in live if t == "edgeclip/demo/events"]
check(len(events) >= 2, f"only {len(events)} events on edgeclip/demo/events")
check(events == stdout_events, f"MQTT events differ from the stdout events:\n{events}\n{stdout_events}")
for e in events:
    check(set(e) == {"type", "camera", "zone", "label", "prompt", "score", "prob", "frame", "ts", "latency_ms", "runner_up", "snapshot"}, f"event fields: {e}")
    folder = e["label"] if e["zone"] == "all" else f"{e['label']}@{e['zone']}"
    check(e["snapshot"] and e["snapshot"].startswith(f"{work}/snapshots/demo/{folder}/"), f"event snapshot: {e}")
    check(e["type"] in ("start", "end") and e["camera"] == "demo", f"event: {e}")
starts = sum(e["type"] == "start" for e in events)
# The zone `whole` is the whole frame cropped: it sees what the zone `all` sees of red_circle.
zoned = [(e["type"], e["frame"]) for e in events if e["zone"] == "whole"]
whole = [(e["type"], e["frame"]) for e in events if e["zone"] == "all" and e["label"] == "red_circle"]
check(len(zoned) >= 2 and zoned == whole, f"zone whole events {zoned}, zone all red_circle events {whole}")
check({e["zone"] for e in events} == {"all", "whole"}, f"zones {sorted({e['zone'] for e in events})}")
zone_states = [p for t, r, p in live if t == "edgeclip/demo/whole/red_circle/state"]
check("ON" in zone_states and zone_states[-1:] == ["OFF"], f"zone state sequence {zone_states}")
check(starts == len(events) - starts, f"{starts} starts but {len(events) - starts} ends")
avail = [p for t, r, p in live if t == "edgeclip/ci/availability"]
check(avail[:1] == ["online"] and avail[-1:] == ["offline"], f"availability sequence {avail}")
states = [(t, p) for t, r, p in live if t.endswith("/state")]
check(any(p == "ON" for t, p in states) and any(p == "OFF" for t, p in states), f"states {states}")
ret = {t: (r, p) for t, r, p in retained}
check(ret.get("edgeclip/ci/availability") == ("1", "offline"), f"retained availability {ret.get('edgeclip/ci/availability')}")
check(ret.get("edgeclip/demo/availability") == ("1", "offline"), f"retained camera availability {ret.get('edgeclip/demo/availability')}")
for t, (r, p) in ret.items():
    if t.endswith("/state"):
        check((r, p) == ("1", "OFF"), f"{t} retained as {(r, p)} after the clip ended")
disc = [(t, p) for t, (r, p) in ret.items() if t.startswith("homeassistant/binary_sensor/")]
check(len(disc) >= 4, f"{len(disc)} retained discovery configs")
for t, p in disc:
    d = json.loads(p)
    check("state_topic" in d and "device" in d and d.get("availability_mode") == "all"
          and [a["topic"] for a in d.get("availability", [])] == ["edgeclip/ci/availability", "edgeclip/demo/availability"],
          f"discovery {t}: {d}")
check(not any(t == "edgeclip/demo/events" for t in ret), "events must not be retained")
# Every start event's snapshot: the file it names, retained on its label's snapshot topic.
for e in events:
    if e["type"] != "start":
        continue
    level = e["label"] if e["zone"] == "all" else f"{e['zone']}/{e['label']}"
    r, jpeg = ret.get(f"edgeclip/demo/{level}/snapshot", (None, b""))
    check(r == "1" and jpeg[:2] == b"\xff\xd8", f"{level}: retained snapshot {r} {jpeg[:4]!r}")
    check(open(e["snapshot"], "rb").read() == jpeg, f"{e['snapshot']} differs from the retained snapshot")
snaps = [t for t in ret if t.endswith("/snapshot")]
check(len(snaps) == starts, f"{len(snaps)} retained snapshots for {starts} start events")
zone_disc = json.loads(ret.get("homeassistant/binary_sensor/edgeclip_demo/whole__red_circle/config", ("", "{}"))[1])
check(zone_disc.get("state_topic") == "edgeclip/demo/whole/red_circle/state" and zone_disc.get("name") == "red_circle (whole)",
      f"the zone's discovery config: {zone_disc}")
images = [t for t in ret if t.startswith("homeassistant/image/")]
check(len(images) >= 4, f"{len(images)} retained image discovery configs")
if errors:
    print("mosquitto check FAILED:\n  " + "\n  ".join(errors))
    sys.exit(1)
print(f"mosquitto check passed: {len(events)} events, {len(states)} state messages, "
      f"{len(disc)} discovery configs, {len(snaps)} snapshots, availability {avail}")
PY

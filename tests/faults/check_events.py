"""Compares the events a subscriber saw on MQTT with the events the daemon printed on stdout.

    python3 tests/faults/check_events.py WORK [--allow-replayed]

WORK/stdout.jsonl holds every event the daemon accepted (stdout is written before the MQTT
queue takes it); WORK/live.txt what mosquitto_sub recorded ("topic retain payload" lines). Every
accepted event must reach the subscriber, in order. A resent event may arrive twice (QoS 1 is
at least once): duplicates are removed before comparing, and counted. Prints one summary line.
"""
import json
import sys

work = sys.argv[1]
accepted = [e for e in map(json.loads, open(f"{work}/stdout.jsonl")) if e["type"] != "stats"]
seen = []
for line in open(f"{work}/live.txt", encoding="utf-8"):
    topic, _, payload = line.rstrip("\n").split(" ", 2)
    if topic.endswith("/events"):
        seen.append(json.loads(payload))


def key(e):
    return (e["type"], e["camera"], e["label"], e["frame"], e["ts"])


unique, keys = [], set()
for e in seen:
    if key(e) not in keys:
        keys.add(key(e))
        unique.append(e)
strip = lambda e: {k: v for k, v in e.items() if k != "replayed"}
missing = [key(e) for e in accepted if key(e) not in keys]
if missing:
    sys.exit(f"{len(missing)} of {len(accepted)} accepted events never reached the subscriber: {missing[:5]}")
order = [key(e) for e in unique if key(e) in {key(a) for a in accepted}]
if order != [key(e) for e in accepted]:
    sys.exit(f"events arrived out of order:\n  sent {[key(e) for e in accepted]}\n  seen {order}")
different = [(a, s) for a, s in zip(accepted, unique) if strip(a) != strip(s)]
if different:
    sys.exit(f"an event changed on the way: {different[0]}")
print(f"{len(accepted)} accepted events, all delivered in order ({len(seen) - len(unique)} duplicates)")

# The web page is abused while the daemon detects: 64 connections that never send a byte (16
# times http.max_connections), and for 13 s (longer than one loop of the clip) a stream of garbage,
# half-sent headers and oversized headers. Detection and MQTT do not notice (a start event reaches
# the broker during the abuse), the server answers a normal request afterwards, and SIGTERM still
# stops the daemon cleanly.
start_broker
record "$work/live.txt"
demo_config "$work/demo.toml" '[http]' 'enabled = true' 'listen = "127.0.0.1:0"' \
    'max_connections = 4' 'header_timeout_s = 1'
start_daemon "$work/demo.toml"
wait_for "$work/daemon.log" 'serving the web page on http://' 30
base=$(sed -n 's|.*serving the web page on \(http://[0-9.:]*\)/.*|\1|p' "$work/daemon.log" | head -1)
wait_for "$work/live.txt" '/events 0 \{"type":"start"' 30
starts_before=$(count "$work/live.txt" '/events 0 \{"type":"start"')
python3 - "${base#http://}" >"$work/abuse.txt" <<'PY'
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
addr = (host, int(port))
idle = [socket.create_connection(addr) for _ in range(64)]
sent = 0
end = time.time() + 13
payloads = [b"\x00\x01GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n"]
while time.time() < end:
    try:
        s = socket.create_connection(addr, timeout=2)
        s.sendall(payloads[sent % len(payloads)])
        s.close()
        sent += 1
    except OSError:
        time.sleep(0.05)
for s in idle:
    s.close()
print(sent)
PY
note "$(cat "$work/abuse.txt") bad requests sent while 64 idle connections were held"
kill -0 "$daemon_pid" || fail "the daemon died under the abuse"
starts_after=$(count "$work/live.txt" '/events 0 \{"type":"start"')
((starts_after > starts_before)) || fail "no start event reached the broker during the abuse"
code=$(curl -s -o /dev/null --max-time 30 -w '%{http_code}' "$base/api/live")
[[ $code == 200 ]] || fail "the server answered $code after the abuse"
note "$((starts_after - starts_before)) start events during the abuse; /api/live answers 200 after it"
curl -s --max-time 30 "$base/metrics" >"$work/metrics.txt"
grep -q '^edgeclip_events_queued ' "$work/metrics.txt" || fail "/metrics has no MQTT queue gauge"
grep -q '^edgeclip_events_total{label="red_circle",type="start"} ' "$work/metrics.txt" ||
    fail "/metrics does not count the red circle's starts"
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "exit status $daemon_status after SIGTERM"

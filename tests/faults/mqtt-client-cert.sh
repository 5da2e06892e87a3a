# A broker that wants a client certificate (mosquitto: `require_certificate true`, the
# certificate's CN taken as the user name, no anonymous clients). With `tls_cert` and `tls_key`
# every event arrives; without them the daemon keeps running, says in words that the broker
# wants a client certificate, and keeps retrying.
make_certs
tls_broker_conf "require_certificate true" "use_identity_as_username true"
start_broker
wait_port "$tls_port"
broker="127.0.0.1:$tls_port"

# 1. With the client certificate: connected as edgeclip-cam, every event arrives.
demo_config "$work/cert.toml"
mqtt_keys "$work/cert.toml" "$tls_port" "tls_ca = \"$work/tls/ca.pem\"" \
    "tls_cert = \"$work/tls/client.pem\"" "tls_key = \"$work/tls/client.key\""
record "$work/live.txt"
start_daemon "$work/cert.toml"
wait_for "$work/daemon.log" "mqtt $broker: connected" 60
wait_for "$work/live.txt" '^edgeclip/demo/events 0 .*"type":"start"' 30
sleep 2
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
sleep 0.5
stop_recorders
python3 tests/faults/check_events.py "$work" || fail "events lost over mutual TLS"
grep -q "New client connected .* u'edgeclip-cam')" "$work/mosquitto.log" || fail "the broker did not see the certificate's CN"
note "client certificate: $(grep -c '/events ' "$work/live.txt") events arrived"
mv "$work/daemon.log" "$work/daemon-cert.log"
rm -f "$work/stdout.jsonl"

# 2. Without it: one clear line, still running, retrying.
demo_config "$work/nocert.toml"
mqtt_keys "$work/nocert.toml" "$tls_port" "tls_ca = \"$work/tls/ca.pem\""
# An attempt is logged as a new connection on the TLS port, or (a handshake that fails while
# the broker accepts it) as a failed client connection.
tried="on port $tls_port\.|^[0-9]+: Client connection from 127.0.0.1 failed"
before=$(count "$work/mosquitto.log" "$tried")
start_daemon "$work/nocert.toml"
# TLS 1.3: the broker checks the certificate after the handshake; the daemon sees its alert or
# its reset, whichever comes first, and names the missing certificate either way.
wait_for "$work/daemon.log" "mqtt $broker: .*(set mqtt.tls_cert and mqtt.tls_key)" 60
broker_attempts "$tried" "$before"
wait_for "$work/stdout.jsonl" '"type":"start"' 30
kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon died without a client certificate"
failures=$(grep -oE "mqtt $broker: .*" "$work/daemon.log" | grep -v ': publishing to' |
    grep -v 'not delivered' | sed 's/; retrying in .*//')
if grep -v 'set mqtt.tls_cert and mqtt.tls_key' <<<"$failures"; then
    fail "a failure line does not name the missing client certificate"
fi
[[ -z $(sort <<<"$failures" | uniq -d) ]] || fail "a failure was logged twice: $failures"
note "no client certificate: $attempts attempts, logged as: $failures"
stop_daemon TERM

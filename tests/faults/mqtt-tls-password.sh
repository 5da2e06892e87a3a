# A broker that takes only TLS with a user name and password (mosquitto: a TLS listener with an
# openssl-made CA and certificate, `password_file` made with mosquitto_passwd, no anonymous
# clients). With `tls_ca`, `username` and `password_file` every event arrives; with a wrong
# password, or a CA that did not sign the broker's certificate, the daemon keeps running, says
# once and in words what the broker refused, never logs the password, and keeps retrying. The
# password from EDGECLIP_MQTT_PASSWORD and `tls = true` with the system's roots connect too.
make_certs
good="Good-pw-$RANDOM$RANDOM"
wrong="Wrong-pw-$RANDOM$RANDOM"
mosquitto_passwd -c -b "$work/passwd" edgeclip "$good" >/dev/null 2>&1 || fail "mosquitto_passwd"
tls_broker_conf "password_file $work/passwd"
start_broker
wait_port "$tls_port"
broker="127.0.0.1:$tls_port"
# A relative password_file: resolved against the config's folder ($work).
printf '%s\n' "$good" >"$work/mqtt-password"
chmod 600 "$work/mqtt-password"
demo_config "$work/tls.toml"
mqtt_keys "$work/tls.toml" "$tls_port" "tls_ca = \"$work/tls/ca.pem\"" 'username = "edgeclip"' \
    'password_file = "mqtt-password"'

# 1. The right password: connected over TLS, every accepted event reaches a subscriber.
record "$work/live.txt"
start_daemon "$work/tls.toml"
wait_for "$work/daemon.log" "mqtt $broker: connected" 60
wait_for "$work/live.txt" '^edgeclip/demo/events 0 .*"type":"start"' 30
sleep 2
stop_daemon TERM
[[ $daemon_status == 0 ]] || fail "the daemon exited with $daemon_status after SIGTERM"
sleep 0.5
stop_recorders
python3 tests/faults/check_events.py "$work" || fail "events lost over TLS"
note "right password over TLS: $(grep -c '/events ' "$work/live.txt") events arrived"
mv "$work/daemon.log" "$work/daemon-good.log"
rm -f "$work/stdout.jsonl"

# 2. A wrong password, inline this time, in a config anyone may read: a warning naming the
# file, one clear line about the refusal, the daemon runs on, the broker sees it try again.
sed -e 's|^password_file = .*|password = "'"$wrong"'"|' "$work/tls.toml" >"$work/inline.toml"
chmod 644 "$work/inline.toml"
before=$(count "$work/mosquitto.log" "on port $tls_port")
start_daemon "$work/inline.toml"
wait_for "$work/daemon.log" "WARN .*$work/inline.toml: holds mqtt.password .*chmod 640" 30
wait_for "$work/daemon.log" "mqtt $broker: the broker refused the credentials of user \"edgeclip\"" 60
broker_attempts "on port $tls_port" "$before"
kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon died after the broker refused it"
wait_for "$work/stdout.jsonl" '"type":"start"' 30
refusals=$(count "$work/daemon.log" 'refused the credentials')
[[ $refusals == 1 ]] || fail "the refusal was logged $refusals times (once expected)"
grep -E 'refused the credentials' "$work/daemon.log" | grep -q ERROR ||
    fail "the refusal is not an ERROR line"
note "wrong password: $attempts attempts, one log line: $(grep -o 'mqtt 127.*' "$work/daemon.log" | grep refused)"
stop_daemon TERM
mv "$work/daemon.log" "$work/daemon-wrong.log"
# `check-config --probe` says the same, and the same warning.
if "$edgeclip" check-config --probe "$work/inline.toml" >"$work/probe.out" 2>&1; then
    fail "check-config --probe passed with a wrong password"
fi
grep -q "mqtt $broker: the broker refused the credentials" "$work/probe.out" ||
    fail "check-config --probe: $(cat "$work/probe.out")"
grep -q "^warning: $work/inline.toml: holds mqtt.password" "$work/probe.out" ||
    fail "check-config does not warn about the readable password: $(cat "$work/probe.out")"
cp "$work/probe.out" "$work/daemon-probe.log"

# 3. A CA that did not sign the broker's certificate.
sed -i "s|^tls_ca = .*|tls_ca = \"$work/tls/other-ca.pem\"|" "$work/tls.toml"
start_daemon "$work/tls.toml"
wait_for "$work/daemon.log" \
    "mqtt $broker: the broker's certificate is not signed by the CA in mqtt.tls_ca \\($work/tls/other-ca.pem\\)" 60
sleep 3
kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon died on a certificate it does not trust"
[[ $(count "$work/daemon.log" 'not signed by') == 1 ]] || fail "the certificate error was repeated"
note "other CA: $(grep -o 'mqtt 127.*' "$work/daemon.log" | grep 'not signed')"
stop_daemon TERM
mv "$work/daemon.log" "$work/daemon-ca.log"

# 4. The password from EDGECLIP_MQTT_PASSWORD, and the CA from the system's store
# (rustls-native-certs reads SSL_CERT_FILE): `tls = true` without tls_ca.
demo_config "$work/env.toml"
mqtt_keys "$work/env.toml" "$tls_port" 'tls = true' 'username = "edgeclip"'
export EDGECLIP_MQTT_PASSWORD=$good SSL_CERT_FILE=$work/tls/ca.pem
start_daemon "$work/env.toml"
unset EDGECLIP_MQTT_PASSWORD SSL_CERT_FILE
wait_for "$work/daemon.log" "mqtt $broker: connected" 60
stop_daemon TERM
mv "$work/daemon.log" "$work/daemon-env.log"
note "EDGECLIP_MQTT_PASSWORD and tls = true with the system's roots: connected"

for log in "$work"/daemon-*.log; do
    if grep -qF -e "$good" -e "$wrong" "$log"; then fail "a password appears in $(basename "$log")"; fi
done

# Shared by the fault cases in tests/faults/*.sh (sourced by tests/faults.sh, once per case, in a
# subshell whose working folder is the repository root). Real processes only: a mosquitto on a
# loopback port, mosquitto_sub recording what a subscriber sees, the daemon binary that
# `cargo test` built, and signals sent with `kill`.
#
# A case is a bash file that runs top to bottom and fails by calling `fail MESSAGE` (or by any
# command failing: `set -e` is on). Everything it starts is killed when it ends.

set -euo pipefail
root=$PWD
work=$(mktemp -d "${TMPDIR:-/tmp}/edgeclip-fault.XXXXXX")
pids=()
broker_pid=""
daemon_pid=""
port=$((20000 + RANDOM % 20000))
edgeclip="${CARGO_TARGET_DIR:-$root/target}/debug/edgeclip"
# The daemon's device name (mqtt.device in demo_config) and its availability topic (retained
# online/offline, the last will); the demo camera's own availability is edgeclip/demo/availability.
device=faulthost
avail="edgeclip/$device/availability"

cleanup() {
    local p
    for p in "${pids[@]}" $broker_pid $daemon_pid; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "  work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# fail MESSAGE: ends the case as failed, with the daemon's log tail for context.
fail() {
    echo "  FAIL: $*"
    if [[ -f $work/daemon.log ]]; then
        echo "  --- daemon log (last 30 lines)"
        tail -n 30 "$work/daemon.log" | sed 's/^/  | /'
    fi
    exit 1
}

# note MESSAGE: a line of the case's report.
note() { echo "  $*"; }

# start_broker [CONFIG LINES...]: mosquitto on $port (loopback, anonymous unless the lines say
# otherwise, no persistence), waited for until it accepts a client. Its log: $work/mosquitto.log.
# A case that sets `broker_conf` gets that text as the whole config instead (it must still open
# a listener on $port, the one `record` subscribes on).
start_broker() {
    if [[ -n ${broker_conf:-} ]]; then
        printf '%s\n' "$broker_conf" >"$work/mosquitto.conf"
    else
        {
            printf 'listener %s 127.0.0.1\npersistence false\n' "$port"
            if [[ $# -eq 0 ]]; then printf 'allow_anonymous true\n'; else printf '%s\n' "$@"; fi
        } >"$work/mosquitto.conf"
    fi
    mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    wait_port "$port"
}

# kill_broker [SIGNAL]: stops the broker (SIGKILL by default) and waits until it is gone.
kill_broker() {
    kill "-${1:-KILL}" "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}

# record FILE [mosquitto_sub ARGS...]: a subscriber on edgeclip/# and homeassistant/#, writing
# "topic retain payload" lines to FILE, in the background; returns once it is subscribed (a probe
# message on edgeclip/probe came back). Snapshots (JPEG bytes) are left out. A live message has
# retain flag 0 even when it was published retained: only messages a subscriber gets from the
# broker's store on subscribing carry 1 (see `retained`).
record() {
    local file=$1 _
    shift
    mosquitto_sub -h 127.0.0.1 -p "$port" -t 'edgeclip/#' -t 'homeassistant/#' -v -F '%t %r %p' \
        -T 'edgeclip/+/+/snapshot' "$@" >"$file" 2>>"$work/sub.log" &
    recorders+=($!)
    pids+=($!)
    for _ in $(seq 100); do
        mosquitto_pub -h 127.0.0.1 -p "$port" -t edgeclip/probe -m "$file" 2>/dev/null || true
        sleep 0.05
        if grep -q "^edgeclip/probe 0 $file\$" "$file" 2>/dev/null; then return 0; fi
    done
    fail "mosquitto_sub did not subscribe on port $port"
}
recorders=()

# stop_recorders: ends every subscriber `record` started (mosquitto_sub would reconnect by itself
# to a restarted broker, and may miss what was published before it subscribed again).
stop_recorders() {
    local p
    for p in "${recorders[@]}"; do kill "$p" 2>/dev/null || true; done
    recorders=()
}

# retained FILE: what a new subscriber gets at once (the retained messages), in FILE.
retained() {
    mosquitto_sub -h 127.0.0.1 -p "$port" -t 'edgeclip/#' -t 'homeassistant/#' -v -F '%t %r %p' \
        -T 'edgeclip/+/+/snapshot' -W 2 --retained-only >"$1" 2>/dev/null || true
}

# demo_config FILE [TOML...]: firmware-config/demo.toml with absolute paths, looped, an [mqtt]
# section for the broker on $port (qos 1, discovery on, device $device, and the lines of
# $mqtt_extra when set) and snapshots in the work folder; extra TOML lines are appended (later
# keys of a table cannot repeat earlier ones: pass whole tables).
demo_config() {
    local file=$1
    shift
    sed -e "s|\.\./|$root/|g" -e 's|^loop = false.*|loop = true|' firmware-config/demo.toml >"$file"
    printf '\n[mqtt]\nhost = "127.0.0.1"\nport = %s\nprefix = "edgeclip"\nqos = 1\nhomeassistant_discovery = true\ndevice = "%s"\n' \
        "$port" "$device" >>"$file"
    if [[ -n ${mqtt_extra:-} ]]; then printf '%s\n' "$mqtt_extra" >>"$file"; fi
    printf '\n[snapshots]\ndir = "%s/snapshots"\n' "$work" >>"$file"
    if [[ $# -gt 0 ]]; then printf '%s\n' "$@" >>"$file"; fi
}

# start_daemon CONFIG [ARGS...]: `edgeclip run` in the background; stdout (events as JSON lines)
# appended to $work/stdout.jsonl, the log (RUST_LOG=info) to $work/daemon.log.
start_daemon() {
    local config=$1
    shift
    RUST_LOG=${RUST_LOG:-info} "$edgeclip" run --config "$config" "$@" \
        >>"$work/stdout.jsonl" 2>>"$work/daemon.log" &
    daemon_pid=$!
}

# stop_daemon [SIGNAL]: sends SIGNAL (TERM by default) and waits; sets daemon_status.
stop_daemon() {
    kill "-${1:-TERM}" "$daemon_pid" 2>/dev/null || true
    daemon_status=0
    { wait "$daemon_pid"; } 2>/dev/null || daemon_status=$?
    daemon_pid=""
}

# wait_for FILE PATTERN [SECONDS]: waits until FILE has a line matching the extended regex
# PATTERN (default 30 s), else fails naming both.
wait_for() {
    local file=$1 pattern=$2 seconds=${3:-30} _
    for _ in $(seq $((seconds * 10))); do
        if [[ -f $file ]] && grep -qE -- "$pattern" "$file"; then return 0; fi
        if [[ -n $daemon_pid ]] && ! kill -0 "$daemon_pid" 2>/dev/null; then
            fail "the daemon exited while waiting for /$pattern/ in $(basename "$file")"
        fi
        sleep 0.1
    done
    fail "no line matching /$pattern/ in $(basename "$file") after ${seconds} s"
}

# count FILE PATTERN: how many lines of FILE match the extended regex PATTERN (0 when none).
count() { grep -cE -- "$2" "$1" 2>/dev/null || true; }

# broker_attempts PATTERN BEFORE: waits up to 15 s until the broker's log has at least 4 more
# lines matching PATTERN (connection attempts) than BEFORE, else fails; sets `attempts`.
broker_attempts() {
    local pattern=$1 before=$2 n _
    attempts=0
    for _ in $(seq 150); do
        n=$(count "$work/mosquitto.log" "$pattern")
        ((${n:-0} - before > attempts)) && attempts=$((n - before))
        ((attempts >= 4)) && return 0
        sleep 0.1
    done
    fail "the daemon tried only $attempts times in 15 s"
}

# rss_kb PID / peak_rss_kb PID: resident and peak resident memory of a process, in kB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
peak_rss_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# make_certs: with openssl, in $work/tls: a CA (ca.pem), a broker certificate for 127.0.0.1 and
# localhost signed by it (server.pem, server.key), a client certificate with the CN edgeclip-cam
# (client.pem, client.key), and a second CA that signed nothing here (other-ca.pem).
make_certs() {
    local d=$work/tls
    mkdir -p "$d"
    (
        cd "$d"
        local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=edgeclip test CA" -keyout ca.key -out ca.pem
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=another CA" -keyout other-ca.key \
            -out other-ca.pem
        openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        openssl req "${ec[@]}" -subj "/CN=edgeclip-cam" -keyout client.key -out client.csr
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile client.ext -out client.pem
    ) >"$work/openssl.log" 2>&1 || fail "openssl: $(tail -n 5 "$work/openssl.log")"
}

# wait_port PORT: waits until something listens on PORT (loopback), else fails.
wait_port() {
    local _
    for _ in $(seq 100); do
        if [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then return 0; fi
        sleep 0.05
    done
    fail "nothing listens on port $1: $(tail -n 5 "$work/mosquitto.log")"
}

# tls_broker_conf [CONFIG LINES...]: a broker_conf with the plain listener on $port (for the
# subscribers) and a TLS listener on $tls_port ($port + 1) with make_certs' server certificate,
# no anonymous clients there, and the lines given (how clients must authenticate).
tls_port=$((port + 1))
tls_broker_conf() {
    # `user`: a broker started as root would otherwise drop to "mosquitto" and not read $work.
    broker_conf="per_listener_settings true
user $(id -un)
persistence false
listener $port 127.0.0.1
allow_anonymous true
listener $tls_port 127.0.0.1
cafile $work/tls/ca.pem
certfile $work/tls/server.pem
keyfile $work/tls/server.key
allow_anonymous false
$(printf '%s\n' "$@")"
}

# mqtt_keys FILE PORT [TOML LINES...]: points the [mqtt] table of a demo_config FILE at PORT and
# adds the lines to it (keys demo_config does not write: credentials, TLS).
mqtt_keys() {
    local file=$1 to=$2 line
    shift 2
    sed -i "s/^port = $port\$/port = $to/" "$file"
    for line in "$@"; do
        LINE=$line awk '{print} /^\[mqtt\]$/ {print ENVIRON["LINE"]}' "$file" >"$file.new"
        mv "$file.new" "$file"
    done
}

#!/usr/bin/env bash
# Scores the systemd unit's sandbox with `systemd-analyze security --offline=yes` and fails when
# the overall exposure is above the limit (default 2.5; 0 is fully locked down, 10 is none).
#
#   tests/unit-security.sh [LIMIT [BINARY]]
#
# Scores firmware-config/edgeclip.service alone, and with the Jetson drop-in
# (firmware-config/edgeclip-jetson.conf) appended, as systemd would merge it. A directive that
# systemd does not know or cannot parse fails the check too: it would be silently ignored on a
# device, and the score would not show it. Needs systemd-analyze (systemd >= 250 for --offline);
# no running systemd.
#
# With BINARY (an edgeclip build) and strace, it also runs `check-config` and the demo
# (firmware-config/demo.toml: files, the demo model on the CPU, stdout) under strace and fails if
# they make a system call the unit's SystemCallFilter= lines do not allow, map memory writable
# and executable (MemoryDenyWriteExecute=), or create a namespace (RestrictNamespaces=). A
# stand-in for starting the daemon under the real sandbox where no systemd runs (containers):
# it covers the CPU path, not cameras, GPIO, MQTT or the GPU.
set -euo pipefail
limit=${1:-2.5}
binary=${2:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
unit=$repo/firmware-config/edgeclip.service
dropin=$repo/firmware-config/edgeclip-jetson.conf
command -v systemd-analyze >/dev/null || { echo "unit-security: systemd-analyze is missing (apt-get install systemd)" >&2; exit 1; }

work=$(mktemp -d /tmp/edgeclip-unit.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$unit" "$work/edgeclip.service"
cat "$unit" "$dropin" >"$work/edgeclip-jetson.service"

status=0
for f in "$work/edgeclip.service" "$work/edgeclip-jetson.service"; do
  name=$(basename "$f")
  # --offline=yes reads the file as it is, without a running systemd or the unit installed.
  if ! systemd-analyze security --offline=yes --no-pager "$f" >"$work/out" 2>"$work/err"; then
    # A non-zero exit without a score is a failure to analyse; with one, the comparison decides.
    grep -q 'Overall exposure level' "$work/out" || { cat "$work/err" >&2; echo "unit-security: $name: systemd-analyze failed" >&2; exit 1; }
  fi
  if grep -Ei 'unknown (key|lvalue|section)|failed to parse|invalid|ignoring' "$work/err" >&2; then
    echo "FAIL: $name: systemd does not accept every line (above)" >&2
    status=1
  fi
  score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$work/out")
  [[ -n $score ]] || { cat "$work/out" "$work/err" >&2; echo "unit-security: $name: no overall exposure in the output" >&2; exit 1; }
  if awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s > l) }'; then
    grep '✗' "$work/out" >&2 || true
    echo "FAIL: $name: exposure $score is above $limit (the lines marked ✗ above cost it)" >&2
    status=1
  else
    echo "unit-security: $name: exposure $score (limit $limit)"
  fi
done

if [[ -n $binary ]]; then
  command -v strace >/dev/null || { echo "unit-security: strace is missing (apt-get install strace)" >&2; exit 1; }
  # The unit's filter as a list of calls: allow-list lines add their sets, `~` lines remove
  # theirs, an empty assignment starts over (systemd.exec(5)).
  expand() {
    # The first line is the set's own name, the others (indented) its calls and nested sets.
    systemd-analyze syscall-filter "$1" </dev/null | sed -n 's/^ \{1,\}\([-@a-z0-9_]\{1,\}\)$/\1/p' | while read -r c; do
      if [[ $c == @* ]]; then expand "$c"; else echo "$c"; fi
    done
  }
  : >"$work/allowed"
  while IFS= read -r line; do
    value=${line#SystemCallFilter=}
    if [[ -z $value ]]; then : >"$work/allowed"; continue; fi
    sign=+; [[ $value == '~'* ]] && { sign=-; value=${value#\~}; }
    for set in $value; do
      if [[ $set == @* ]]; then expand "$set"; else echo "$set"; fi
    done | sort -u >"$work/set"
    if [[ $sign == + ]]; then sort -u "$work/allowed" "$work/set" -o "$work/allowed"
    else comm -23 "$work/allowed" "$work/set" >"$work/rest" && mv "$work/rest" "$work/allowed"; fi
  done < <(grep '^SystemCallFilter=' "$unit")
  [[ -s $work/allowed ]] || { echo "unit-security: the unit has no SystemCallFilter= allow-list" >&2; exit 1; }

  bin=$(realpath "$binary")
  mkdir -p "$work/state" "$work/cache"
  # The daemon talks to systemd (READY=1, WATCHDOG=1) over a datagram socket as it does under
  # the unit: a receiver stands in for systemd, so those calls are traced too.
  python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    s.recv(4096)' "$work/notify" &
  receiver=$!
  for _ in $(seq 50); do [[ -S $work/notify ]] && break; sleep 0.1; done
  trap 'kill $receiver 2>/dev/null; rm -rf "$work"' EXIT
  run() {
    (cd "$repo" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" RUST_LOG=warn \
      STATE_DIRECTORY="$work/state" CACHE_DIRECTORY="$work/cache" \
      NOTIFY_SOCKET="$work/notify" WATCHDOG_USEC=30000000 \
      strace -f -qq -o "$work/trace.$1" -e trace=all -e signal=none "$bin" "${@:2}" >"$work/stdout.$1")
  }
  run check check-config firmware-config/demo.toml
  run demo run --config firmware-config/demo.toml
  grep -q '"type":"start"' "$work/stdout.demo" || { echo "FAIL: the demo under strace printed no start event" >&2; exit 1; }
  sed -n 's/^[0-9]* *\([a-z0-9_]*\)(.*/\1/p' "$work"/trace.* | sort -u >"$work/used"
  denied=$(comm -23 "$work/used" "$work/allowed")
  if [[ -n $denied ]]; then
    echo "FAIL: system calls outside the unit's SystemCallFilter=: $(echo $denied)" >&2
    status=1
  else
    echo "unit-security: check-config and the demo made $(wc -l <"$work/used") distinct system calls, all in the unit's filter ($(wc -l <"$work/allowed") calls)"
  fi
  # systemd refuses mmap() with both PROT_WRITE and PROT_EXEC and any mprotect() to PROT_EXEC.
  if grep -E 'mmap\(.*PROT_WRITE\|PROT_EXEC|mprotect\(.*PROT_EXEC' "$work"/trace.* >&2; then
    echo "FAIL: writable and executable memory (MemoryDenyWriteExecute=yes would refuse it)" >&2
    status=1
  fi
  if grep -E 'unshare\(|setns\(|CLONE_NEW' "$work"/trace.* >&2; then
    echo "FAIL: a namespace is created (RestrictNamespaces=yes would refuse it)" >&2
    status=1
  fi
fi
exit $status

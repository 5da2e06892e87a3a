#!/usr/bin/env bash
# The fault suite: each file in tests/faults/ (but lib.sh) is one fault, run against real
# processes (mosquitto, the daemon, its camera command) with real signals, and asserts what must
# happen. Run by .ci/run; needs mosquitto, mosquitto-clients, openssl and python3.
#
#   bash tests/faults.sh                  # every case
#   bash tests/faults.sh broker-killed    # the cases whose file names contain the word
#   KEEP_WORK=1 bash tests/faults.sh ...  # keep each case's work folder for a look
#
# The daemon binary is the one `cargo test` builds (a plain `cargo build` would rebuild tract).
set -uo pipefail
cd "$(dirname "$0")/.."
cargo test --no-run --quiet 2>/dev/null || { echo "cannot build the daemon"; exit 1; }

failed=()
ran=0
for case in tests/faults/*.sh; do
    name=$(basename "$case" .sh)
    [[ $name == lib ]] && continue
    if [[ $# -gt 0 ]]; then
        wanted=0
        for w in "$@"; do [[ $name == *"$w"* ]] && wanted=1; done
        [[ $wanted == 1 ]] || continue
    fi
    ran=$((ran + 1))
    echo "--- $name"
    start=$(date +%s)
    if (source tests/faults/lib.sh && source "$case"); then
        echo "--- $name: passed ($(($(date +%s) - start)) s)"
    else
        echo "--- $name: FAILED ($(($(date +%s) - start)) s)"
        failed+=("$name")
    fi
done
if [[ $ran == 0 ]]; then
    echo "no fault case matches: $*"
    exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fault suite: ${#failed[@]} of $ran failed: ${failed[*]}"
    exit 1
fi
echo "fault suite: all $ran passed"

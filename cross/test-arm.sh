#!/usr/bin/env bash
# Builds the test suites for aarch64 and armv7 and runs the ones that compute (tract engine against
# onnxruntime's outputs, preprocessing against PIL, tokenizer against open_clip, matcher and
# trigger unit tests, the patched tract paths) under qemu-user on emulated Cortex cores:
#   cortex-a76  tract's int8 dot-product (SDOT) kernels          (Pi 5)
#   cortex-a72  NEON without dot product: the SMLAL int8 fallback (Pi 4)
#   cortex-a53  in-order, NEON                                    (Pi 3, Zero 2 on a 64-bit OS)
#   cortex-a7   32-bit ARMv7 NEON                                 (Pi 3, Zero 2 on a 32-bit OS)
# The thresholds are the x86 tests' own: the same test code runs on each.
set -euo pipefail
cd "$(dirname "$0")/.."

# The boards' test builds leave out the dev-dependencies that only tests/mqtt.rs (a broker) and
# the benches use (Cargo.toml, `cfg(not(edgeclip_cross_tests))`): 139 of the crates to compile.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--cfg edgeclip_cross_tests"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="--cfg edgeclip_cross_tests"

# Builds `cargo test --no-run` for a target and prints "name path" per test executable.
build_tests() {
  local target=$1
  rustup target add "$target" >/dev/null
  cargo test --target "$target" --no-run --lib --test runtime --test preprocess --test tokenizer --test tract_patches \
    --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        print(("lib" if kind == "lib" else m["target"]["name"]), m["executable"])
'
}

# qemu-user answers /proc/self/stat itself, with the CPU-time fields at 0: the daemon's CPU-use
# figure cannot move under emulation, so its unit test runs on the native (x86) pass only.
QEMU_SKIP=(--skip daemon::stats::tests::cpu_seconds_grow_with_work)

run_under() {
  local qemu=$1 sysroot=$2 cpu=$3 exe=$4 name=$5
  printf -- '--- %s on %s\n' "$name" "$cpu"
  "$qemu" -L "$sysroot" -cpu "$cpu" "$exe" --test-threads 2 -q "${QEMU_SKIP[@]}"
}

# Does the runtime see the int8 dot-product instructions exactly where the core has them (its CPU
# precision choice depends on it)? EXPECTED: 1 or 0.
int8_dot_under() {
  local qemu=$1 sysroot=$2 cpu=$3 exe=$4 expected=$5
  printf -- '--- int8 dot-product detection on %s (expected %s)\n' "$cpu" "$expected"
  EDGECLIP_EXPECT_INT8_DOT=$expected "$qemu" -L "$sysroot" -cpu "$cpu" "$exe" -q --ignored --exact \
    model::device::tests::int8_dot_detection_matches_the_emulated_core
}

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
declare -A a64 a32
# Surface compile errors (the JSON pass above hides them).
cargo test --target aarch64-unknown-linux-gnu --no-run --lib --test runtime --test preprocess --test tokenizer --test tract_patches
while read -r name exe; do a64[$name]=$exe; done < <(build_tests aarch64-unknown-linux-gnu)
cargo test --target armv7-unknown-linux-gnueabihf --no-run --lib --test runtime --test preprocess --test tokenizer --test tract_patches
while read -r name exe; do a32[$name]=$exe; done < <(build_tests armv7-unknown-linux-gnueabihf)

q64=qemu-aarch64-static; q32=qemu-arm-static
s64=/usr/aarch64-linux-gnu; s32=/usr/arm-linux-gnueabihf
for t in lib runtime preprocess tokenizer tract_patches; do
  [[ -n ${a64[$t]:-} && -n ${a32[$t]:-} ]] || { echo "missing ARM test binary for $t" >&2; exit 1; }
done

run_under $q64 $s64 cortex-a76 "${a64[runtime]}" runtime
run_under $q64 $s64 cortex-a76 "${a64[preprocess]}" preprocess
run_under $q64 $s64 cortex-a76 "${a64[lib]}" lib
run_under $q64 $s64 cortex-a72 "${a64[runtime]}" runtime
run_under $q64 $s64 cortex-a72 "${a64[lib]}" lib
run_under $q64 $s64 cortex-a53 "${a64[runtime]}" runtime
run_under $q64 $s64 cortex-a53 "${a64[tokenizer]}" tokenizer
# The patched tract paths (vendor/README.md) with each core's packing layouts: SDOT's K=4-inner
# int8 panels on the A76, the plain ones elsewhere.
run_under $q64 $s64 cortex-a76 "${a64[tract_patches]}" tract_patches
run_under $q64 $s64 cortex-a72 "${a64[tract_patches]}" tract_patches
run_under $q32 $s32 cortex-a7 "${a32[tract_patches]}" tract_patches
run_under $q32 $s32 cortex-a7 "${a32[runtime]}" runtime
run_under $q32 $s32 cortex-a7 "${a32[preprocess]}" preprocess
run_under $q32 $s32 cortex-a7 "${a32[tokenizer]}" tokenizer
run_under $q32 $s32 cortex-a7 "${a32[lib]}" lib
int8_dot_under $q64 $s64 cortex-a76 "${a64[lib]}" 1
int8_dot_under $q64 $s64 cortex-a72 "${a64[lib]}" 0
int8_dot_under $q64 $s64 cortex-a53 "${a64[lib]}" 0
int8_dot_under $q32 $s32 cortex-a7 "${a32[lib]}" 0
# The glibc floor: the newest glibc symbol version the ARM binaries need must not exceed what the
# boards ship (Ubuntu 22.04 / JetPack 6: 2.35; Raspberry Pi OS bookworm: 2.36).
glibc_floor() { "$1" -T "$2" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1; }
for pair in "aarch64-linux-gnu-objdump ${a64[runtime]}" "arm-linux-gnueabihf-objdump ${a32[runtime]}"; do
  read -r objdump exe <<<"$pair"
  floor=$(glibc_floor "$objdump" "$exe")
  printf -- '--- glibc floor of %s: %s\n' "$(basename "$exe")" "$floor"
  if [[ $(printf '%s\n2.35\n' "$floor" | sort -V | tail -n 1) != 2.35 ]]; then
    echo "glibc floor $floor is above 2.35 (JetPack 6 / Ubuntu 22.04)" >&2
    exit 1
  fi
done
echo "ARM tests passed"

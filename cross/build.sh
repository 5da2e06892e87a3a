#!/usr/bin/env bash
# Cross-compiles the edgeclip binary for a Raspberry Pi / Jetson from an x86-64 Debian machine.
#
#   cross/build.sh aarch64    # Pi 4/5, Pi 3/Zero 2 on a 64-bit OS, Jetson: target/aarch64-unknown-linux-gnu/release/edgeclip
#   cross/build.sh armv7      # Pi 3 / Zero 2 on a 32-bit OS:               target/armv7-unknown-linux-gnueabihf/release/edgeclip
#
# Installs Debian's cross linker and the rustup target when missing (as root), then builds with
# V4L2 (USB cameras) on.
# The glibc floor of the result is printed at the end (see cross/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  aarch64) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu; libc="libc6-dev-arm64-cross linux-libc-dev-arm64-cross"; objdump=aarch64-linux-gnu-objdump ;;
  armv7) target=armv7-unknown-linux-gnueabihf; gcc=gcc-arm-linux-gnueabihf; libc="libc6-dev-armhf-cross linux-libc-dev-armhf-cross"; objdump=arm-linux-gnueabihf-objdump ;;
  *) echo "usage: cross/build.sh aarch64|armv7 [cargo build args...]" >&2; exit 2 ;;
esac
shift
if ! dpkg -s libclang-dev "$gcc" $libc >/dev/null 2>&1; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libclang-dev "$gcc" $libc >/dev/null
fi
rustup target add "$target" >/dev/null
cargo build --release --target "$target" --features v4l2 "$@"
bin=target/$target/release/edgeclip
echo "built $bin ($(du -h "$bin" | cut -f1))"
echo "glibc floor: $("$objdump" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"

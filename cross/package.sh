#!/usr/bin/env bash
# Builds the Debian package for a board (or this machine) with cargo-deb.
#
#   cross/package.sh arm64    # Pi 4/5, Jetson (64-bit OS)  -> target/aarch64-unknown-linux-gnu/debian/edgeclip_*_arm64.deb
#   cross/package.sh armhf    # Pi 3 / Zero 2, 32-bit OS     -> target/armv7-unknown-linux-gnueabihf/debian/edgeclip_*_armhf.deb
#   cross/package.sh amd64    # x86-64 Debian/Ubuntu         -> target/debian/edgeclip_*_amd64.deb
#
# The package holds /usr/bin/edgeclip, the demo model (/usr/share/edgeclip/models/demo),
# /etc/edgeclip/edgeclip.toml (a conffile), the systemd unit (installed disabled), the GPIO udev
# rule, example configs; its postinst creates the system user `edgeclip` in the video and gpio
# groups. What goes in is `[package.metadata.deb]` in Cargo.toml. Installs cargo-deb when missing.
# Prints the sizes of the binary and of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  arm64) target=aarch64-unknown-linux-gnu; build=(bash cross/build.sh aarch64) ;;
  armhf) target=armv7-unknown-linux-gnueabihf; build=(bash cross/build.sh armv7) ;;
  amd64) target=; build=(cargo build --release --features v4l2) ;;
  *) echo "usage: cross/package.sh arm64|armhf|amd64" >&2; exit 2 ;;
esac
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version "^3"
if [[ -n $target ]]; then
  "${build[@]}"
  cargo deb --no-build --target "$target"
  bin=target/$target/release/edgeclip
  debs=(target/"$target"/debian/edgeclip_*.deb)
else
  dpkg -s libclang-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libclang-dev >/dev/null; }
  "${build[@]}"
  cargo deb --no-build
  bin=target/release/edgeclip
  debs=(target/debian/edgeclip_*.deb)
fi
deb=$(ls -t "${debs[@]}" | head -n 1)
echo "binary:  $bin $(stat -c %s "$bin") bytes (unstripped; the package strips it)"
echo "package: $deb $(stat -c %s "$deb") bytes"

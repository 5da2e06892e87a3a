#!/usr/bin/env bash
# Builds the Debian package for a board (or this machine) with cargo-deb.
#
#   cross/package.sh arm64    # Pi 4/5, Jetson (64-bit OS)  -> target/debian/edgeclip_*_arm64.deb
#   cross/package.sh armhf    # Pi 3 / Zero 2, 32-bit OS     -> target/debian/edgeclip_*_armhf.deb
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
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version "=3.8.0"
if [[ -n $target ]]; then
  "${build[@]}"
  deb=$(cargo deb --no-build --target "$target" | tail -n 1)
  bin=target/$target/release/edgeclip
else
  dpkg -s libclang-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libclang-dev >/dev/null; }
  "${build[@]}"
  deb=$(cargo deb --no-build | tail -n 1)
  bin=target/release/edgeclip
fi
echo "binary:  $bin $(stat -c %s "$bin") bytes unstripped, $(dpkg-deb --fsys-tarfile "$deb" | tar -tvf - ./usr/bin/edgeclip | awk '{print $3}') bytes stripped in the package"
echo "package: $deb $(stat -c %s "$deb") bytes"

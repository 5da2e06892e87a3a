#!/usr/bin/env bash
# Installs an edgeclip .deb into a throwaway root and uses it there, as a user of the package would.
#
#   tests/deb-install.sh target/debian/edgeclip_0.1.0-1_amd64.deb
#
# The throwaway root is an overlay over this machine's / (its writes land in a temporary folder,
# the real system is untouched) entered with chroot in a private mount namespace; run as root.
# In it: `dpkg -i` (running the package's postinst for real), then checks that the system user
# exists in the video and gpio groups, that /etc/edgeclip/edgeclip.toml is a conffile readable by
# that user only, that the unit (the repo's hardened one) is installed but not enabled, and that
# `edgeclip check-config` and `edgeclip classify` work from the installed files as the service user; then `dpkg --purge`.
set -euo pipefail
deb=$(realpath "${1:?usage: tests/deb-install.sh PACKAGE.deb}")
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "deb-install: needs root (mount namespace, overlay, chroot)" >&2; exit 1; }

echo "== package metadata"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb" | awk '{print $1, $6}' | sed 's/^/   /'
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)
[[ $conffiles == *"/etc/edgeclip/edgeclip.toml"* ]] || { echo "FAIL: edgeclip.toml is not a conffile: $conffiles" >&2; exit 1; }

work=$(mktemp -d /tmp/edgeclip-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{upper,work,root}
cp "$deb" "$work/upper.deb"
image=$(ls "$repo"/tests/data/clip/frame_0030.jpg)
cp "$image" "$work/frame.jpg"

# Everything below runs in a private mount namespace: the mounts vanish with it.
unshare --mount --propagation private bash -euo pipefail -s "$work" "$repo" <<'INNER'
work=$1
repo=$2
root=$work/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mkdir -p "$root/tmp/pkg"
cp "$work/upper.deb" "$work/frame.jpg" "$root/tmp/pkg/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

echo "== dpkg -i in the throwaway root"
# A machine that already has the user or package would hide what the postinst does.
in_root sh -c '! getent passwd edgeclip' || { echo "FAIL: user edgeclip exists before the install"; exit 1; }
in_root dpkg -i /tmp/pkg/upper.deb

echo "== what the postinst did"
in_root id edgeclip
for g in video gpio; do
  in_root id -nG edgeclip | tr ' ' '\n' | grep -qx "$g" || { echo "FAIL: edgeclip is not in group $g"; exit 1; }
done
perm=$(in_root stat -c '%U:%G %a' /etc/edgeclip/edgeclip.toml)
[[ $perm == "root:edgeclip 640" ]] || { echo "FAIL: /etc/edgeclip/edgeclip.toml is $perm"; exit 1; }
in_root dpkg-query -W -f='${Conffiles}\n' edgeclip | grep -q /etc/edgeclip/edgeclip.toml
[[ -f $root/usr/lib/systemd/system/edgeclip.service || -f $root/lib/systemd/system/edgeclip.service ]] \
  || { echo "FAIL: no systemd unit"; exit 1; }
[[ ! -e $root/etc/systemd/system/multi-user.target.wants/edgeclip.service ]] \
  || { echo "FAIL: the service is enabled before it is configured"; exit 1; }
[[ -f $root/usr/lib/udev/rules.d/99-edgeclip-gpio.rules ]] || { echo "FAIL: no udev rule"; exit 1; }
# The unit tests/unit-security.sh scores is the one installed, its Jetson drop-in beside the examples.
unit=$root/usr/lib/systemd/system/edgeclip.service
[[ -f $unit ]] || unit=$root/lib/systemd/system/edgeclip.service
cmp "$unit" "$repo/firmware-config/edgeclip.service" || { echo "FAIL: the installed unit differs from firmware-config/edgeclip.service"; exit 1; }
[[ -f $root/usr/share/doc/edgeclip/examples/edgeclip-jetson.conf ]] || { echo "FAIL: no Jetson drop-in"; exit 1; }

echo "== the installed binary, as the service user"
as_user() { in_root runuser -u edgeclip -- "$@"; }
as_user /usr/bin/edgeclip --version
as_user /usr/bin/edgeclip info --model /usr/share/edgeclip/models/demo
as_user /usr/bin/edgeclip check-config /etc/edgeclip/edgeclip.toml
out=$(as_user /usr/bin/edgeclip classify --model /usr/share/edgeclip/models/demo --json /tmp/pkg/frame.jpg)
echo "$out" | cut -c1-200
top=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["top"]["prompt"])')
[[ $top == "a photo of a red circle" ]] || { echo "FAIL: classify says $top for a frame showing a red circle"; exit 1; }
# Another user must not read the config (it may hold MQTT credentials).
if in_root runuser -u nobody -- cat /etc/edgeclip/edgeclip.toml >/dev/null 2>&1; then
  echo "FAIL: nobody can read /etc/edgeclip/edgeclip.toml"; exit 1
fi

echo "== dpkg --purge"
in_root dpkg --purge edgeclip
[[ ! -e $root/usr/bin/edgeclip && ! -e $root/etc/edgeclip/edgeclip.toml ]] || { echo "FAIL: files left after purge"; exit 1; }
umount -R "$root/dev" "$root/proc" || true
umount "$root"
INNER
echo "deb-install: ok"

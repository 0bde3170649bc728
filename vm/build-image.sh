#!/usr/bin/env bash
# Build (or reuse) the lane's Debian 12 guest: a raw ext4 root image, its kernel and initrd.
#
#   vm/build-image.sh CACHE_DIR    -> prints the image directory on its last line
#
# The image is keyed by a hash of its inputs (this script, vm/packages, vm/image/*, the
# apt sources it is built from): the same inputs reuse the cached image, any change builds
# a new one. ICMP6_SHIM_VM_REBUILD=1 forces a rebuild (e.g. to pick up a newer kernel).
# ICMP6_SHIM_VM_WARM_PACKAGES (a development aid, never CI): Debian packages to lay into a
# separate "warm" image, so the guest's `make system-deps` finds them installed and a test
# loop skips ~10 minutes of emulated dpkg. The cold image, which proves the install, is kept.
# Needs root, mmdebstrap and e2fsprogs (vm/run.sh installs them when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?usage: build-image.sh CACHE_DIR}
suite=bookworm
size=${ICMP6_SHIM_VM_DISK:-12G}

# The mirror the host's apt uses: the only Debian registry this machine (and CI) reaches.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] && grep -qv '^\s*\(#\|$\)' "$f" && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "error: no apt sources on this host to build the guest from" >&2; exit 1; }

packages=$(grep -v '^\s*#' "$here/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
warm=$(echo "${ICMP6_SHIM_VM_WARM_PACKAGES:-}" | tr -s ' ,\n' ',' | sed 's/^,//; s/,$//')
kind=cold
if [ -n "$warm" ]; then kind=warm; packages="$packages,$warm"; fi
key=$( { cat "$0" "$here/packages" "$here"/image/*; cat "${sources[@]}"; echo "$suite $size $warm"; } \
	| sha256sum | cut -c1-16)
img="$cache/image-$kind-$key"

if [ -f "$img/done" ] && [ "${ICMP6_SHIM_VM_REBUILD:-0}" != 1 ]; then
	echo "image: cached $img ($(cat "$img/done"))" >&2
	echo "$img"
	exit 0
fi

echo "image: building $img (suite $suite, variant important + $packages)" >&2
rm -rf "$img" "$img.tmp"
tmp="$img.tmp"
mkdir -p "$tmp"
root="$tmp/root"
start=$(date +%s)
# --variant=important is what Debian's installer lays down without tasks: a fresh machine.
# Two departures, neither about what is installed: no login prompt on the serial console
# (it is the lane's log), and dpkg without fsync (a throwaway disk; fsync under TCG is slow).
mmdebstrap --mode=root --variant=important --include="$packages" \
	--customize-hook="install -m 755 '$here/image/icmp6-vm-boot' \"\$1/usr/local/sbin/icmp6-vm-boot\"" \
	--customize-hook="install -m 644 '$here/image/icmp6-vm-lane.service' \"\$1/etc/systemd/system/\"" \
	--customize-hook="install -m 644 '$here/image/20-wired.network' \"\$1/etc/systemd/network/\"" \
	--customize-hook='chroot "$1" systemctl enable icmp6-vm-lane.service systemd-networkd.service' \
	--customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
	--customize-hook='echo icmp6-vm > "$1/etc/hostname"' \
	--customize-hook='passwd --root "$1" --delete root' \
	--customize-hook='chroot "$1" systemctl mask serial-getty@ttyS0.service' \
	--customize-hook='echo force-unsafe-io > "$1/etc/dpkg/dpkg.cfg.d/unsafe-io"' \
	"$suite" "$root" "${sources[@]}" >&2
kver=$(ls "$root"/lib/modules | sort -V | tail -1)
cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
# Logged so a run says exactly what it tests on.
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$tmp/packages.txt"
# mkfs -d copies the tree into the image: no loop device, no mount needed.
mkfs.ext4 -q -F -L icmp6-vm -d "$root" "$tmp/root.img" "$size" >&2
rm -rf "$root"
echo "kernel $kver, $(wc -l < "$tmp/packages.txt") packages, built in $(( $(date +%s) - start ))s" > "$tmp/done"
mv "$tmp" "$img"
# One cold image is kept: an old one is never used again. Warm ones (development, one per
# package set, possibly built by parallel loops) are left for the developer to remove.
if [ "$kind" = cold ]; then
	for old in "$cache"/image-cold-* "$cache"/image-[0-9a-f]*; do [ "$old" = "$img" ] || rm -rf "$old"; done
fi
echo "image: built $img ($(cat "$img/done"))" >&2
echo "$img"

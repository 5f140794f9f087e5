#!/usr/bin/env bash
# Builds (once) the guest of the stock-kernel suite: a Debian 12 tree with
# Debian's own kernel (linux-image-amd64: dummy, veth and the netfilter
# modules as users have them), systemd, iptables and the AWS CLI, as an
# ext4 image plus the kernel and initrd to boot it with. Cached under
# $IMDS_SHIM_STOCK_CACHE (default /var/tmp/imds-shim-stock-kernel) in a
# directory named after a hash of this script, so a change here builds a
# new image and an unchanged one is reused.
#
# usage: test/stock-kernel/image.sh   (as root)  -> prints the image directory
set -euo pipefail
export LC_ALL=C
CACHE=${IMDS_SHIM_STOCK_CACHE:-/var/tmp/imds-shim-stock-kernel}
PKGS=linux-image-amd64,initramfs-tools,kmod,systemd,systemd-sysv,dbus,iproute2,iptables,curl,ca-certificates,procps,awscli
KEY=$(cat "$0" | sha256sum | cut -c1-12)
DIR=$CACHE/image-$KEY
if [ -e "$DIR/.complete" ]; then echo "$DIR"; exit 0; fi

[ "$(id -u)" = 0 ] || { echo "image.sh: must run as root (mmdebstrap, chroot)" >&2; exit 1; }
for c in mmdebstrap mkfs.ext4; do command -v "$c" >/dev/null || { echo "image.sh: missing $c (test/deps.sh installs it)" >&2; exit 1; }; done
mkdir -p "$CACHE"
exec 8> "$CACHE/build.lock"
flock -w 900 8
if [ -e "$DIR/.complete" ]; then echo "$DIR"; exit 0; fi
# Older images (other keys) are of no further use.
find "$CACHE" -mindepth 1 -maxdepth 1 -name 'image-*' ! -name "image-$KEY" -exec rm -rf {} +
tmp=$DIR.tmp
rm -rf "$tmp"; mkdir -p "$tmp"
sources=/dev/null
[ -f /etc/apt/sources.list.d/debian.sources ] && sources=/etc/apt/sources.list.d/debian.sources
echo "stock-kernel: building the guest image in $DIR (once; a few minutes)" >&2
mmdebstrap --quiet --variant=minbase --include="$PKGS" bookworm "$tmp/root" - < "$sources" > "$tmp/mmdebstrap.log" 2>&1 \
	|| { tail -n 30 "$tmp/mmdebstrap.log" >&2; echo "image.sh: mmdebstrap failed" >&2; exit 1; }
r=$tmp/root
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$r/etc/fstab"
echo stock-kernel > "$r/etc/hostname"
mkdir -p "$r/xfer"
# PID 1 of the guest until it hands over to systemd: mount what the kernel
# does not, then run the suite's own init from the 9p share. It is tiny and
# fixed, so the image does not change when the suite does.
cat > "$r/sbin/imds-stock-init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
modprobe -a 9pnet_virtio 9p
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xfer /xfer
exec /bin/sh /xfer/guest-init.sh
INIT
chmod 755 "$r/sbin/imds-stock-init"
# No getty, no waiting for a network the init configures itself.
rm -f "$r/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
kver=$(basename "$(ls -d "$r"/lib/modules/*)")
cp "$r/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$r/boot/initrd.img-$kver" "$tmp/initrd.img"
echo "$kver" > "$tmp/kernel-version"
size=$(( $(du -sm "$r" | cut -f1) + 1024 ))
truncate -s "${size}M" "$tmp/disk.img"
mkfs.ext4 -q -F -L root -d "$r" "$tmp/disk.img"
rm -rf "$r"
touch "$tmp/.complete"
rm -rf "$DIR"; mv "$tmp" "$DIR"
echo "$DIR"

#!/bin/sh
# PID 1 of the stock-kernel guest, run from the 9p share by the image's
# /sbin/imds-stock-init once /proc, /sys, /dev and /xfer are mounted.
# It runs the Go test binaries as root against Debian's own kernel, writes
# their output and exit codes to /xfer/results, then hands PID 1 over to
# systemd, which boots and runs the short end-to-end test
# (stock-e2e.service, e2e-guest.sh) and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
R=/xfer/results
mkdir -p "$R"
. /xfer/env
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "guest: kernel $(uname -r)" > "$R/guest.txt"

# What the kernel tests and the daemon use, loaded up front (the kernel
# would also load most of them on demand).
for m in virtio_net dummy veth nf_tables nft_chain_nat nf_nat iptable_nat ip6table_nat ip_tables ip6_tables xt_tcpudp xt_comment; do
	modprobe "$m" >> "$R/guest.txt" 2>&1 || echo "guest: modprobe $m failed" >> "$R/guest.txt"
done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

# gotest NAME DIR [ENV=VALUE...]: run /xfer/NAME.test in DIR.
gotest() {
	name=$1 dir=$2; shift 2
	start=$(date +%s)
	(cd "$dir" && env "$@" "/xfer/$name.test" -test.v=test2json -test.count=1 -test.timeout=15m) > "$R/$name.out" 2>&1
	echo $? > "$R/$name.rc"
	echo "guest: $name.test exit $(cat "$R/$name.rc") in $(( $(date +%s) - start ))s" >> "$R/guest.txt"
}
# The kernel tests re-execute themselves in a private network namespace.
gotest netredirect /xfer/netredirect
gotest hoststate /xfer
# The real daemon with the default network.link: auto must put the
# address on the dummy link imds0. The whole VM is a throwaway, so these run
# in its own network namespace (marked as private for nstest), where the
# host's moto is reachable through QEMU's user network.
gotest daemon /xfer IMDS_SHIM_BIN=/xfer/imds-shim IMDS_SHIM_TEST_MOTO_URL="$STS" IMDS_SHIM_TEST_WANT_LINK=imds0 \
	IMDS_SHIM_TEST_HOST_NETNS=stock-kernel-vm

# Hand over to systemd for the packaged daemon (eth0 stays configured;
# nothing in the image manages it).
cp /xfer/stock-e2e.service /etc/systemd/system/
ln -sf /etc/systemd/system/stock-e2e.service /etc/systemd/system/multi-user.target.wants/stock-e2e.service
umount /tmp /run
sync
exec /lib/systemd/systemd

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

# gotest NAME DIR RUN [WRAPPER...]: run the tests matching RUN of
# /xfer/NAME.test in DIR, under WRAPPER (e.g. ip netns exec NS env VAR=VALUE)
# if given. The tests with in-memory fakes run on the host already; the
# guest (TCG: every instruction emulated) runs the ones that need its kernel.
gotest() {
	name=$1 dir=$2 run=$3; shift 3
	start=$(date +%s)
	(cd "$dir" && "$@" "/xfer/$name.test" -test.v=test2json -test.count=1 -test.timeout=15m -test.run "$run") > "$R/$name.out" 2>&1
	echo $? > "$R/$name.rc"
	echo "guest: $name.test exit $(cat "$R/$name.rc") in $(( $(date +%s) - start ))s" >> "$R/guest.txt"
}
# The kernel tests re-execute themselves in a private network namespace.
gotest netredirect /xfer/netredirect '^TestKernel'
gotest hoststate /xfer .
# The real daemon with the default network.link: auto must put the
# address on the dummy link imds0. Its tests run in a network namespace of
# their own (marked as private for nstest, which would otherwise make one
# with no way out), joined to the guest by a veth pair and masqueraded, so
# they reach the host's moto; whatever they leave there goes with the
# namespace and cannot spill into the end-to-end test below.
ip netns add imds-daemon-test
ip link add vdt0 type veth peer name vdt1 netns imds-daemon-test
ip addr add 10.99.0.1/30 dev vdt0
ip link set vdt0 up
ip -n imds-daemon-test link set lo up
ip -n imds-daemon-test addr add 10.99.0.2/30 dev vdt1
ip -n imds-daemon-test link set vdt1 up
ip -n imds-daemon-test route add default via 10.99.0.1
sysctl -qw net.ipv4.ip_forward=1
iptables -t nat -A POSTROUTING -s 10.99.0.2/32 -j MASQUERADE
gotest daemon /xfer '^(TestServe|TestServeFailuresChangeNothing|TestCrashThenCleanupAndRestart)$' ip netns exec imds-daemon-test env IMDS_SHIM_BIN=/xfer/imds-shim IMDS_SHIM_TEST_MOTO_URL="$STS" \
	IMDS_SHIM_TEST_WANT_LINK=imds0 IMDS_SHIM_TEST_HOST_NETNS=stock-kernel-daemon-netns
iptables -t nat -D POSTROUTING -s 10.99.0.2/32 -j MASQUERADE
sysctl -qw net.ipv4.ip_forward=0
ip netns pids imds-daemon-test | xargs -r kill -KILL
ip netns del imds-daemon-test

# Hand over to systemd for the packaged daemon (eth0 stays configured;
# nothing in the image manages it).
cp /xfer/stock-e2e.service /etc/systemd/system/
ln -sf /etc/systemd/system/stock-e2e.service /etc/systemd/system/multi-user.target.wants/stock-e2e.service
umount -R /tmp /run
sync
exec /lib/systemd/systemd

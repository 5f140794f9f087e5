#!/usr/bin/env bash
# The stock-kernel suite: the production default (network.link: auto, so
# the dummy link imds0) on Debian's own kernel, which has the dummy, veth
# and netfilter modules that the machines running `make test` may lack.
#
# usage: test/stock-kernel/run.sh [DIST_DIR]   (as root; `make stock-kernel` builds the .deb first)
#
# It boots linux-image-amd64 under QEMU with TCG (no KVM needed) from a
# cached Debian 12 image (image.sh), shares a directory with the guest over
# 9p, and runs as root in the guest:
#   1. the pkg/netredirect tests (kernel tests on iptables-nft and
#      iptables-legacy, TestKernelDummyLink among them), pkg/internal/hoststate
#      and pkg/daemon (the real binary: serve, crash, cleanup), compiled here
#      as static test binaries; a minimal init runs them before systemd starts;
#   2. under the booted systemd, the .deb: dpkg -i, `systemctl enable --now`,
#      curl and the Go SDK with no AWS configuration get credentials, stop
#      and purge leave the state as it was (e2e-guest.sh).
# STS is moto on this host's 127.0.0.1, which the guest reaches as 10.0.2.2.
# Results, exit codes included, come back through the 9p share; any failure,
# a test that should run but skipped, or a guest that never reported, fails
# the suite. The closing line is "stock-kernel: N passed, M failed".
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIST=$(cd "${1:-$ROOT/dist}" && pwd)
GO=${GO:-go}
T0=$(date +%s)
die() {
	echo "stock-kernel: $*" >&2
	echo "stock-kernel: 0 passed, 1 failed"
	[ -z "${IMDS_SHIM_STOCK_SUMMARY:-}" ] || printf 'stock-kernel: %s\nstock-kernel: 0 passed, 1 failed\n' "$*" > "$IMDS_SHIM_STOCK_SUMMARY"
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (it builds a Debian image with mmdebstrap)"
for c in qemu-system-x86_64 mmdebstrap mkfs.ext4 curl python3 "$GO"; do
	command -v "$c" >/dev/null || die "missing $c (test/deps.sh installs what is missing)"
done
python3 -c 'import moto.server' 2>/dev/null || die "python3 cannot import moto (the STS emulator)"
shopt -s nullglob
debs=("$DIST"/imds-shim_*_amd64.deb)
shopt -u nullglob
[ ${#debs[@]} = 1 ] || die "want exactly one amd64 .deb in $DIST, found ${#debs[@]} (run make package)"

IMG=$("$HERE/image.sh") || die "building the guest image failed"
WORK=$(mktemp -d /tmp/imds-shim-stock.XXXXXX)
X=$WORK/xfer
MOTOPID= QPID=
cleanup() {
	[ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
	[ -z "$MOTOPID" ] || kill "$MOTOPID" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$X/results" "$X/netredirect"

# ---------------------------------------------------------------- binaries
# Static, as the guest has no Go: test binaries of the packages that need
# the kernel, the daemon, the state helper and the Go SDK client.
(
	cd "$ROOT"
	export CGO_ENABLED=0
	"$GO" test -c -o "$X/netredirect.test" ./pkg/netredirect
	"$GO" test -c -o "$X/daemon.test" ./pkg/daemon
	"$GO" test -c -o "$X/hoststate.test" ./pkg/internal/hoststate
	"$GO" build -trimpath -o "$X/imds-shim" ./cmd/imds-shim
	"$GO" build -trimpath -o "$X/hoststate" ./pkg/internal/hoststate/cmd/hoststate
	"$GO" build -trimpath -o "$X/goclient" ./test/e2e/goclient
) || die "building the test binaries failed"
cp -r "$ROOT/pkg/netredirect/testdata" "$X/netredirect/"
ln -s /xfer/netredirect.test "$X/netredirect/netredirect.test" 2>/dev/null || true
cp "${debs[0]}" "$X/pkg.deb"
cp "$HERE/guest-init.sh" "$HERE/e2e-guest.sh" "$HERE/stock-e2e.service" "$X/"
echo "stock-kernel: image and test binaries ready in $(( $(date +%s) - T0 ))s; image $IMG (kernel $(cat "$IMG/kernel-version"))"

# -------------------------------------------------------------------- moto
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$port" > "$WORK/moto.log" 2>&1 &
MOTOPID=$!
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/" && break; sleep 0.05; done
curl -fs -o /dev/null "http://127.0.0.1:$port/moto-api/" || die "moto did not start on 127.0.0.1:$port"
echo "STS=http://10.0.2.2:$port" > "$X/env"

# -------------------------------------------------------------------- boot
# -snapshot: the guest writes to a throwaway overlay; the image stays as built.
TB=$(date +%s)
timeout 1500 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 -nographic -no-reboot -snapshot \
	-kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
	-append 'root=/dev/vda rw console=ttyS0 panic=-1 quiet net.ifnames=0 init=/sbin/imds-stock-init' \
	-drive file="$IMG/disk.img",format=raw,if=virtio,cache=unsafe \
	-netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
	-fsdev local,id=x0,path="$X",security_model=none -device virtio-9p-pci,fsdev=x0,mount_tag=xfer \
	< /dev/null > "$WORK/console.log" 2>&1 &
QPID=$!
qrc=0; wait "$QPID" || qrc=$?
QPID=
echo "stock-kernel: guest ran for $(( $(date +%s) - TB ))s (qemu exit $qrc)"

# ----------------------------------------------------------------- results
R=$X/results
cat "$R/guest.txt" 2>/dev/null | grep -v '^$' || true
fail=0
json=$WORK/tests.json
: > "$json"
for name in netredirect hoststate daemon; do
	if [ ! -f "$R/$name.rc" ]; then
		echo "stock-kernel: $name.test never reported"; fail=1; continue
	fi
	"$GO" tool test2json -p "github.com/imds-shim/imds-shim/pkg/${name/hoststate/internal/hoststate}" < "$R/$name.out" >> "$json"
	[ "$(cat "$R/$name.rc")" = 0 ] || { echo "stock-kernel: $name.test exited $(cat "$R/$name.rc")"; fail=1; }
done
sum=$WORK/summary.txt
(cd "$ROOT" && "$GO" run ./test/testsummary -label "stock-kernel go tests" -failures-only \
	-require TestKernelDummyLink,TestKernelAutoLink,TestKernelRedirectBothBackends,TestServe,TestCrashThenCleanupAndRestart) \
	< "$json" > "$sum" || fail=1
cat "$sum"
gpass=$(sed -n 's/^stock-kernel go tests: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' "$sum")
gfail=$(sed -n 's/^stock-kernel go tests: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' "$sum")
if [ -f "$R/e2e.txt" ]; then cat "$R/e2e.txt"; fi
epass=$(sed -n 's/^stock-kernel e2e: \([0-9]*\) passed.*/\1/p' "$R/e2e.txt" 2>/dev/null)
efail=$(sed -n 's/^stock-kernel e2e: [0-9]* passed, \([0-9]*\) failed.*/\1/p' "$R/e2e.txt" 2>/dev/null)
if [ "$(cat "$R/e2e.rc" 2>/dev/null)" != 0 ]; then
	echo "stock-kernel: the end-to-end test failed or never reported"; fail=1
	for f in e2e-status.txt e2e-journal.txt; do [ -s "$R/$f" ] && { echo "--- $f"; cat "$R/$f"; }; done
fi
if [ "$fail" != 0 ]; then echo "--- guest console (last 60 lines)"; tail -n 60 "$WORK/console.log"; fi
npass=$(( ${gpass:-0} + ${epass:-0} ))
nfail=$(( ${gfail:-0} + ${efail:-0} ))
[ "$fail" = 0 ] || [ "$nfail" -gt 0 ] || nfail=1
{
	grep -E '^stock-kernel go tests: Test' "$sum" || true
	grep -E '^stock-kernel e2e: ' "$R/e2e.txt" 2>/dev/null || echo "stock-kernel e2e: never reported"
	echo "stock-kernel: Debian kernel $(cat "$IMG/kernel-version") under QEMU/TCG, $(( $(date +%s) - T0 ))s"
	echo "stock-kernel: $npass passed, $nfail failed"
} > "$WORK/closing.txt"
tail -n 2 "$WORK/closing.txt"
# make test prints these lines again at its very end.
[ -z "${IMDS_SHIM_STOCK_SUMMARY:-}" ] || cp "$WORK/closing.txt" "$IMDS_SHIM_STOCK_SUMMARY"
exit "$fail"

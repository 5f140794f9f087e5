#!/usr/bin/env bash
# make bench: builds the harness and pkg/imds's benchmark binary on the host,
# then runs everything inside a private network namespace (unshare --net, lo
# up), so that the daemon's 169.254.169.254 address and DNAT rules never
# touch the host. Usage: sudo test/bench/bench.sh [bin/imds-shim] [run flags]
# The benchmark reports; it exits non-zero only when the harness breaks.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${1:-bin/imds-shim}
shift || true
if [ -z "${IMDS_SHIM_BENCH_HOST_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench: run as root (it needs a private network namespace)" >&2; exit 1; }
  for tool in wrk unshare ip iptables python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
  done
  [ -x "$BIN" ] || { echo "bench: $BIN not found; run make build" >&2; exit 1; }
  work=$(mktemp -d /tmp/imds-shim-bench-bin.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  go build -o "$work/bench" ./test/bench
  go test -c -o "$work/imds.test" ./pkg/imds
  go test -c -o "$work/callers.test" ./pkg/callers
  # BENCH_NICE (e.g. -10) raises the harness's priority over other work on
  # a shared machine; every process it starts inherits it.
  IMDS_SHIM_BENCH_HOST_NETNS=$(readlink /proc/self/ns/net) IMDS_SHIM_BENCH_WORK=$work \
    nice -n "${BENCH_NICE:-0}" unshare --net -- "$0" "$BIN" "$@"
  exit $?
fi

ip link set lo up
exec "$IMDS_SHIM_BENCH_WORK/bench" run -bin "$BIN" -imds-test "$IMDS_SHIM_BENCH_WORK/imds.test" \
  -imds-dir pkg/imds -callers-test "$IMDS_SHIM_BENCH_WORK/callers.test" -lua test/bench/imds.lua -out test/bench/RESULTS.md "$@"

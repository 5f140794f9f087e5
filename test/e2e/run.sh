#!/usr/bin/env bash
# End-to-end test of the imds-shim packages in a real, booted systemd.
#
# usage: test/e2e/run.sh [DIST_DIR]      (as root; `make e2e` builds the packages first)
#
# A minimal Debian 12 tree (mmdebstrap, cached under $IMDS_SHIM_E2E_CACHE,
# default /var/tmp/imds-shim-e2e) boots with `systemd-nspawn -b` in a network
# namespace of its own, joined to the host by a veth pair on which the moto
# STS emulator listens. Inside, the .deb is installed with apt and driven the
# way an operator would: configure, `systemctl enable --now`, AWS CLI, boto3
# and the Go SDK with no AWS configuration at all, reload with a new role,
# reinstall (upgrade) while running, kill -9, per-service roles (a User= and
# a DynamicUser= service, each its own role), a "container" (a netns behind a
# bridge of the guest) getting its sources role, the listening sockets
# surviving reloads under a client loop, the iptables-legacy backend, stop,
# the watchdog, purge. The .rpm is checked with rpm queries and an
# install into an `rpm --root` tree. Each step prints its time.
#
# If a run is killed before its cleanup, the next run removes what it left
# (container, moto, netns, veth) before starting.
#
# Nothing of the host is changed: the guest runs on a tmpfs overlay of the
# cached tree, the addresses live only on the test's own veth pair and
# netns, and the host's addresses and iptables (nft and legacy) are compared
# before and after. Everything the test starts is removed on any exit.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIST=$(cd "${1:-$ROOT/dist}" && pwd)
CACHE=${IMDS_SHIM_E2E_CACHE:-/var/tmp/imds-shim-e2e}

NS=imds-e2e               # network namespace of the guest
VETH=ve-imds-e2e          # host side of the veth pair (eth0 in the guest)
MACHINE=imds-e2e
HOST_IP=10.213.77.1       # moto listens here
GUEST_IP=10.213.77.2
STS=http://$HOST_IP:5000
ROLE1=arn:aws:iam::123456789012:role/e2e-first
ROLE2=arn:aws:iam::123456789012:role/e2e-second
PIDFILE=/var/tmp/imds-shim-e2e.pids   # what a killed run left running
WORK= NSPID= MOTOPID= L= LEADERNS=
GUEST_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The guest tree: what the unit, the package and the clients under test need.
ROOTFS_PKGS=systemd,systemd-sysv,dbus,iproute2,iptables,curl,ca-certificates,procps,awscli,python3-boto3
ROOTFS_KEY=$(printf '%s\n' "$ROOTFS_PKGS" bookworm minbase v1 | sha256sum | cut -c1-12)
ROOTFS=$CACHE/rootfs-$ROOTFS_KEY

# ---------------------------------------------------------------- reporting
T0=$(date +%s.%N)
TLAST=$T0
FAILED=0
NPASS=0
NFAIL=0
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
step() { printf '[%6.2fs] %-58s +%ss\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$1" "$(elapsed "$TLAST")"; TLAST=$(date +%s.%N); }
ok() { printf '  ok   %s\n' "$*"; NPASS=$((NPASS + 1)); }
fail() { printf '  FAIL %s\n' "$*"; FAILED=1; NFAIL=$((NFAIL + 1)); }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }
# expect_eq WHAT WANT GOT
expect_eq() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: want '$2', got '$3'"; fi; }
# expect_match WHAT REGEX TEXT
expect_match() { if printf '%s' "$3" | grep -Eq -- "$2"; then ok "$1"; else fail "$1: want /$2/, got: $3"; fi; }

[ "$(id -u)" = 0 ] || die "must run as root (it boots a container and creates a network namespace)"
for c in systemd-nspawn mmdebstrap nsenter ip iptables-save iptables-legacy-save rpm dpkg-deb curl flock go; do
	command -v "$c" >/dev/null || die "missing $c (apt-get install systemd-container mmdebstrap rpm iptables iproute2 curl)"
done
python3 -c 'import moto.server' 2>/dev/null || die "python3 cannot import moto (the STS emulator, python3 -m moto.server; pip install 'moto[server]')"
shopt -s nullglob
debs=("$DIST"/imds-shim_*_amd64.deb)
rpms=("$DIST"/imds-shim-*.x86_64.rpm)
[ ${#debs[@]} = 1 ] || die "want exactly one amd64 .deb in $DIST, found ${#debs[@]} (run make package)"
[ ${#rpms[@]} = 1 ] || die "want exactly one x86_64 .rpm in $DIST, found ${#rpms[@]} (run make package)"
DEB=${debs[0]} RPM=${rpms[0]}
shopt -u nullglob

# One run at a time on this host, whatever the cache: the netns, veth and
# addresses have fixed names. Long-lived children get fd 9 closed, so a
# leftover of a killed run never holds the lock.
mkdir -p "$CACHE"
exec 9> /var/tmp/imds-shim-e2e.lock
flock -w 900 9 || die "another e2e run holds /var/tmp/imds-shim-e2e.lock"

WORK=$(mktemp -d /tmp/imds-shim-e2e.XXXXXX)
mkdir -p "$WORK/xfer" "$WORK/pkgs"
# Work on copies, so a `make package` running meanwhile cannot pull them away.
cp "$DIST"/imds-shim_*.deb "$DIST"/imds-shim-*.rpm "$WORK/pkgs/"
DEB=$WORK/pkgs/$(basename "$DEB") RPM=$WORK/pkgs/$(basename "$RPM") DIST=$WORK/pkgs

# --------------------------------------------------------- state snapshots
# The project's one state comparison (pkg/internal/hoststate): links,
# addresses, iptables rules and chains of both backends (v4 and v6) and the
# sysctls a redirect could touch, as facts without indexes, DAD flags or
# counters. The same static binary runs on the host and in the guest.
HS=$WORK/xfer/hoststate
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$HS" ./pkg/internal/hoststate/cmd/hoststate) || die "building hoststate failed"
host_state() { "$HS" snapshot --netns > "$1"; }
# expect_same WHAT SNAPSHOT_WANT SNAPSHOT_GOT
expect_same() {
	if "$HS" diff "$2" "$3" > "$WORK/diff.txt"; then ok "$1"; else fail "$1:"; sed 's/^/         /' "$WORK/diff.txt"; fi
}
# expect_same_lines WHAT FILE_WANT FILE_GOT: two plain lists, e.g. of paths.
expect_same_lines() {
	if diff -u "$2" "$3" > "$WORK/diff.txt"; then ok "$1"; else fail "$1:"; sed 's/^/         /' "$WORK/diff.txt"; fi
}
# facts SNAPSHOT: one fact a line, for grep.
facts() { "$HS" show "$1"; }

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM HUP
	if { [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; } && [ -n "$L" ] && [ "$(readlink "/proc/$L/ns/pid" 2>/dev/null)" = "$LEADERNS" ]; then
		timeout 10 nsenter -t "$L" -a journalctl -u imds-shim.service --no-pager -o short-monotonic > "$WORK/journal.txt" 2>&1
	fi
	if [ -n "$NSPID" ] && kill -0 "$NSPID" 2>/dev/null; then
		# SIGTERM asks nspawn to power the guest off cleanly.
		kill -TERM "$NSPID"
		for _ in $(seq 1 100); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$NSPID" 2>/dev/null
		wait "$NSPID" 2>/dev/null
	fi
	if [ -n "$MOTOPID" ]; then kill "$MOTOPID" 2>/dev/null; wait "$MOTOPID" 2>/dev/null; fi
	ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	rm -f "$PIDFILE"
	ip netns del "$NS" 2>/dev/null
	ip link del "$VETH" 2>/dev/null
	if [ -s "$WORK/host.before" ]; then
		host_state "$WORK/host.after"
		if "$HS" diff "$WORK/host.before" "$WORK/host.after" > "$WORK/host.diff"; then
			ok "host links, addresses, netns, iptables (nft, legacy, v4, v6) and sysctls unchanged"
		else
			fail "the host changed:"; sed 's/^/         /' "$WORK/host.diff"; rc=1
		fi
	fi
	if [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
		for f in nspawn.log moto.log; do
			[ -s "$WORK/$f" ] && { echo "--- $f (last 40 lines)"; tail -n 40 "$WORK/$f"; }
		done
		[ -s "$WORK/journal.txt" ] && { echo "--- guest journal of imds-shim"; cat "$WORK/journal.txt"; }
		[ "$rc" != 0 ] || rc=1
	fi
	rm -rf "$WORK"
	printf 'e2e: %s in %ss\n' "$([ "$rc" = 0 ] && echo PASS || echo FAIL)" "$(elapsed "$T0")"
	[ "$rc" = 0 ] || [ "$NFAIL" -gt 0 ] || NFAIL=1
	printf 'e2e: %d passed, %d failed\n' "$NPASS" "$NFAIL"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Leftovers of an earlier run that was killed before its cleanup could run
# (we hold the lock, so they are ours): its nspawn and moto, by the PIDs it
# recorded and only if they still are those programs, then its netns and veth.
if [ -s "$PIDFILE" ]; then
	for p in $(cat "$PIDFILE"); do
		case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
		*systemd-nspawn*"-M $MACHINE"*|*moto.server*"$HOST_IP"*) kill -KILL "$p" 2>/dev/null || true ;;
		esac
	done
fi
rm -f "$PIDFILE"
ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
ip netns del "$NS" 2>/dev/null || true
ip link del "$VETH" 2>/dev/null || true
for d in /tmp/imds-shim-e2e.*; do [ "$d" = "$WORK" ] || rm -rf "$d"; done

host_state "$WORK/host.before"
step "host snapshot"

# -------------------------------------------------------------- the rootfs
if [ ! -e "$ROOTFS/.complete" ]; then
	echo "building the guest tree $ROOTFS (once; about 1-3 minutes)"
	rm -rf "$ROOTFS.tmp"
	sources=/dev/null
	[ -f /etc/apt/sources.list.d/debian.sources ] && sources=/etc/apt/sources.list.d/debian.sources
	mmdebstrap --quiet --variant=minbase --include="$ROOTFS_PKGS" bookworm "$ROOTFS.tmp" - < "$sources" \
		> "$WORK/mmdebstrap.log" 2>&1 || { tail -n 30 "$WORK/mmdebstrap.log"; die "mmdebstrap failed"; }
	touch "$ROOTFS.tmp/.complete"
	rm -rf "$ROOTFS"
	mv "$ROOTFS.tmp" "$ROOTFS"
	step "rootfs built"
else
	step "rootfs cached ($ROOTFS)"
fi

# ------------------------------------------------------------ the Go client
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/xfer/goclient" ./test/e2e/goclient)
cp "$DEB" "$WORK/xfer/"
DEBNAME=$(basename "$DEB")
step "Go SDK client built"

# ------------------------------------------------------ network and moto
ip netns add "$NS"
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip addr add "$HOST_IP/30" dev "$VETH"
ip link set "$VETH" up
ip -n "$NS" addr add "$GUEST_IP/30" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up
python3 -m moto.server -H "$HOST_IP" -p 5000 > "$WORK/moto.log" 2>&1 9>&- &
MOTOPID=$!
echo "$MOTOPID" >> "$PIDFILE"
for _ in $(seq 1 200); do curl -fs -o /dev/null "$STS/moto-api/" && break; sleep 0.05; done
curl -fs -o /dev/null "$STS/moto-api/" || die "moto did not come up on $STS"
step "netns $NS + veth, moto STS on $STS"

# ------------------------------------------------------------------- boot
# With --network-namespace-path nspawn does not treat the network as private
# and drops CAP_NET_ADMIN from the guest; the netns is the test's own, so
# hand it back (the daemon needs it for netlink and iptables).
systemd-nspawn -D "$ROOTFS" -M "$MACHINE" -b --register=no --keep-unit --console=read-only \
	--volatile=overlay --link-journal=no --capability=CAP_NET_ADMIN --network-namespace-path="/run/netns/$NS" \
	--bind-ro="$WORK/xfer":/xfer > "$WORK/nspawn.log" 2>&1 < /dev/null 9>&- &
NSPID=$!
echo "$NSPID" >> "$PIDFILE"
# The guest's PID 1 is nspawn's child named systemd in ANOTHER pid namespace.
# nspawn's short-lived outer child is still in the host's namespaces: never
# nsenter that one, or the commands would run on the host.
SELFNS=$(readlink /proc/self/ns/pid)
for _ in $(seq 1 300); do
	L=$(pgrep -P "$NSPID" -x systemd || true)
	[ -n "$L" ] && [ "$(readlink "/proc/$L/ns/pid" 2>/dev/null)" != "$SELFNS" ] && break
	L=; sleep 0.05
done
[ -n "$L" ] || die "the container did not start"
LEADERNS=$(readlink "/proc/$L/ns/pid")

# g CMD...: run a command in the guest, with no AWS configuration at all.
g() {
	[ "$(readlink "/proc/$L/ns/pid" 2>/dev/null)" = "$LEADERNS" ] && [ "$LEADERNS" != "$SELFNS" ] \
		|| die "the guest's PID 1 ($L) is gone; refusing to nsenter"
	timeout 120 nsenter -t "$L" -a env -i PATH="$GUEST_PATH" HOME=/root LANG=C.UTF-8 TERM=dumb "$@" 9>&-
}
gsh() { g bash -c "$1"; }

state=
for _ in $(seq 1 300); do
	state=$(g systemctl is-system-running 2>/dev/null || true)
	case "$state" in running|degraded) break ;; esac
	sleep 0.05
done
case "$state" in
running) ;;
degraded) echo "  note guest is degraded: $(g systemctl --failed --no-legend --plain | awk '{print $1}' | xargs)" ;;
*) die "guest did not boot: $state" ;;
esac
step "guest booted ($state)"

# The guest's network state, as the host's (hoststate, from /xfer).
guest_net() { g /xfer/hoststate snapshot > "$1"; }
# Every path with imds-shim in its name, outside /proc, /sys and /xfer.
guest_files() {
	gsh 'find / \( -path /proc -o -path /sys -o -path /xfer -o -path /dev \) -prune -o -iname "*imds*" -print | sort' > "$1"
}
guest_journal() { g journalctl -u imds-shim.service --no-pager -o short-monotonic > "$WORK/journal.txt" 2>&1 || true; }

guest_net "$WORK/net.pristine"
guest_files "$WORK/files.pristine"

# ---------------------------------------------------------------- install
echo "== apt install /xfer/$DEBNAME"
out=$(g env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "/xfer/$DEBNAME" 2>&1) \
	|| { echo "$out"; die "apt install failed"; }
step "apt install"
expect_match "postinst says what to do next" "systemctl enable --now imds-shim" "$out"
expect_eq "installing does not start the daemon" inactive "$(g systemctl is-active imds-shim || true)"
expect_eq "installing does not enable the daemon" disabled "$(g systemctl is-enabled imds-shim || true)"
expect_eq "shipped config is 0600 root" "600 root" "$(g stat -c '%a %U' /etc/imds-shim/imds-shim.yaml)"
expect_eq "dpkg marks the config as a conffile" "/etc/imds-shim/imds-shim.yaml" \
	"$(g dpkg-query -W -f='${Conffiles}' imds-shim | awk 'NF{print $1}')"
pkgver=$(g dpkg-query -W -f='${Version}' imds-shim)
expect_eq "imds-shim version matches the package" "imds-shim ${pkgver%-*}" "$(g imds-shim version)"
expect_match "man page installed" "imds-shim" "$(g zcat /usr/share/man/man8/imds-shim.8.gz | head -n 5)"
verify=$(g systemd-analyze verify --man=no imds-shim.service 2>&1) && [ -z "$(printf '%s' "$verify" | grep -i imds)" ] \
	&& ok "systemd-analyze verify imds-shim.service is clean" || fail "systemd-analyze verify: $verify"
security=$(g systemd-analyze security imds-shim.service 2>&1 | sed -n 's/.*Overall exposure level for imds-shim.service: \([0-9.]*\).*/\1/p')
awk -v s="$security" 'BEGIN{exit !(s != "" && s <= 2.0)}' \
	&& ok "systemd-analyze security exposure $security (<= 2.0)" || fail "systemd-analyze security exposure '$security' > 2.0"

# The shipped configuration names no role: the daemon must refuse it and
# leave nothing behind.
if g imds-shim check > "$WORK/check.txt" 2>&1; then fail "imds-shim check accepts the shipped config (no role_arn)"
else ok "imds-shim check rejects the shipped config: $(grep -m1 -i role "$WORK/check.txt" || head -n1 "$WORK/check.txt")"; fi
if g systemctl start imds-shim 2>/dev/null; then fail "the daemon started without a role"; else ok "the daemon refuses to start without a role"; fi
g systemctl stop imds-shim 2>/dev/null || true
g systemctl reset-failed imds-shim 2>/dev/null || true
guest_net "$WORK/net.refused"
expect_same "a refused start changes no address or rule" "$WORK/net.pristine" "$WORK/net.refused"
step "package checks"

# --------------------------------------------------------- configure, start
write_config() {
	gsh "umask 077; cat > /etc/imds-shim/imds-shim.yaml <<EOF
role_arn: $1
region: us-east-1
sts_endpoint: $STS
duration: 15m
credentials_file: /etc/imds-shim/credentials
EOF"
}
gsh 'umask 077; printf "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n" > /etc/imds-shim/credentials'
write_config "$ROLE1"
if g imds-shim check > "$WORK/check.txt" 2>&1; then ok "imds-shim check accepts the configured role"
else fail "imds-shim check on a good config:"; sed 's/^/         /' "$WORK/check.txt"; fi
guest_net "$WORK/net.before"
g systemctl enable --now imds-shim 2>/dev/null || { guest_journal; die "systemctl enable --now imds-shim failed"; }
step "configure + systemctl enable --now"
expect_eq "systemctl is-active" active "$(g systemctl is-active imds-shim || true)"
guest_net "$WORK/net.running"
expect_match "169.254.169.254 is on a link" "^address 169.254.169.254/32 on " "$(facts "$WORK/net.running")"
expect_match "a DNAT rule redirects 169.254.169.254" "^iptables .*169.254.169.254.*DNAT" "$(facts "$WORK/net.running")"

# ---------------------------------------------------------------- clients
role_of() { sed -n 's|.*assumed-role/\([^/"]*\)/.*|\1|p' | head -n 1; }
clients() { # clients ROLENAME
	local token out
	token=$(g curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token) || token=
	out=$(g curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/iam/security-credentials/ 2>&1 || true)
	expect_eq "curl IMDSv2: role list" "$1" "$out"
	out=$(g aws sts get-caller-identity --endpoint-url "$STS" --output text --query Arn 2>&1 || true)
	expect_eq "aws CLI v2 (no AWS configuration): assumed role" "$1" "$(printf '%s' "$out" | role_of)"
	[ "$(printf '%s' "$out" | role_of)" = "$1" ] || echo "         aws said: $out"
	# botocore 1.29 (bookworm) takes no region from IMDS, unlike the AWS CLI v2
	# and the Go SDK, so boto3 is given the region like the endpoint.
	out=$(g python3 -c '
import sys, boto3
s = boto3.Session()
c = s.get_credentials()
arn = s.client("sts", endpoint_url=sys.argv[1], region_name=sys.argv[2]).get_caller_identity()["Arn"]
print(c.method, arn)' "$STS" us-east-1 2>&1 || true)
	expect_eq "boto3 (no AWS configuration): assumed role" "$1" "$(printf '%s' "$out" | role_of)"
	expect_match "boto3 got its credentials from IMDS" "^iam-role " "$out"
	out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
	expect_eq "Go SDK v2 (no AWS configuration): assumed role" "$1" "$(printf '%s' "$out" | role_of)"
	expect_match "Go SDK got its credentials from IMDS" "source=EC2RoleProvider" "$out"
}
clients e2e-first
expect_match "STATUS= tells systemd what it serves" "." "$(g systemctl show -p StatusText --value imds-shim)"
# The secrets it serves never reach the journal.
token=$(g curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token || true)
secret=$(g curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/iam/security-credentials/e2e-first \
	| sed -n 's/.*"SecretAccessKey" *: *"\([^"]*\)".*/\1/p')
[ -n "$secret" ] || fail "no SecretAccessKey in the credential document"
if [ -n "$secret" ] && g journalctl -u imds-shim.service --no-pager -o cat | grep -qF "$secret"; then
	fail "the journal contains a served SecretAccessKey"
else ok "no served secret in the journal"; fi
step "clients: curl, aws CLI, boto3, Go SDK"

# ----------------------------------------------------------------- reload
pid_before=$(g systemctl show -p MainPID --value imds-shim)
write_config "$ROLE2"
g systemctl reload imds-shim || fail "systemctl reload failed"
expect_eq "reload keeps the same process" "$pid_before" "$(g systemctl show -p MainPID --value imds-shim)"
expect_eq "active after reload" active "$(g systemctl is-active imds-shim || true)"
clients e2e-second
g imds-shim status > "$WORK/status.txt" 2>&1 && ok "imds-shim status answers" || fail "imds-shim status: $(cat "$WORK/status.txt")"
expect_match "imds-shim status names the new role" "e2e-second" "$(cat "$WORK/status.txt")"
# An invalid configuration is refused on reload; the old one keeps serving.
gsh 'cp /etc/imds-shim/imds-shim.yaml /root/good.yaml; sed -i "s/^role_arn: .*/role_arn: not-an-arn/" /etc/imds-shim/imds-shim.yaml'
g systemctl reload imds-shim 2>/dev/null || true
expect_eq "a bad config on reload keeps the daemon active" active "$(g systemctl is-active imds-shim || true)"
out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
expect_eq "a bad config on reload keeps serving the old role" e2e-second "$(printf '%s' "$out" | role_of)"
gsh 'cp /root/good.yaml /etc/imds-shim/imds-shim.yaml && rm /root/good.yaml'
step "systemctl reload with a new role, then a bad config"

# ------------------------------------------- upgrade (reinstall) while running
pid_before=$(g systemctl show -p MainPID --value imds-shim)
g env DEBIAN_FRONTEND=noninteractive dpkg -i "/xfer/$DEBNAME" > "$WORK/upgrade.txt" 2>&1 || { cat "$WORK/upgrade.txt"; fail "reinstall failed"; }
pid_after=$(g systemctl show -p MainPID --value imds-shim)
expect_eq "upgrade restarts a running daemon: active" active "$(g systemctl is-active imds-shim || true)"
[ "$pid_after" != "$pid_before" ] && ok "upgrade restarted it (pid $pid_before -> $pid_after)" || fail "upgrade did not restart the daemon"
expect_eq "upgrade keeps the edited config" "role_arn: $ROLE2" "$(g head -n 1 /etc/imds-shim/imds-shim.yaml)"
guest_net "$WORK/net.upgraded"
expect_same "after the upgrade restart: one copy of every rule and address" "$WORK/net.running" "$WORK/net.upgraded"
step "upgrade while running"

# ----------------------------------------------------------------- kill -9
pid_before=$(g systemctl show -p MainPID --value imds-shim)
g kill -9 "$pid_before"
pid_after=
for _ in $(seq 1 200); do
	pid_after=$(g systemctl show -p MainPID --value imds-shim)
	[ "$(g systemctl is-active imds-shim || true)" = active ] && [ "$pid_after" != 0 ] && [ "$pid_after" != "$pid_before" ] && break
	sleep 0.1
done
expect_eq "after kill -9 systemd restarts it" active "$(g systemctl is-active imds-shim || true)"
expect_eq "NRestarts" 1 "$(g systemctl show -p NRestarts --value imds-shim)"
guest_net "$WORK/net.restarted"
expect_same "after kill -9 and restart: exactly one copy of every rule and address" "$WORK/net.running" "$WORK/net.restarted"
out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
expect_eq "credentials served after the restart" e2e-second "$(printf '%s' "$out" | role_of)"
step "kill -9 -> restart"

# ------------------------------------------------------- firewall reload
# A reload that replaces the tables (firewalld, or iptables-restore of a
# saved configuration) drops the daemon's rules. With the nft backend the
# daemon repairs them on the kernel's change event; the journal names the
# trigger, so this does not depend on when the periodic check would come.
cursor=$(g journalctl -u imds-shim.service -n 1 --show-cursor --no-pager -o cat | sed -n 's/^-- cursor: //p')
gsh 'printf "*nat\nCOMMIT\n*filter\nCOMMIT\n" | iptables-nft-restore' || fail "iptables-nft-restore in the guest"
trigger=
for _ in $(seq 1 100); do
	trigger=$(g journalctl -u imds-shim.service --after-cursor "$cursor" --no-pager -o cat | sed -n 's/.*msg=repaired .*trigger=//p' | tr -d '"' | head -n 1)
	[ -n "$trigger" ] && break
	sleep 0.1
done
expect_eq "a firewall reload is repaired on the ruleset change event" "rules changed" "$trigger"
guest_net "$WORK/net.reloaded"
expect_same "after the firewall reload was repaired: every rule back, once" "$WORK/net.running" "$WORK/net.reloaded"
out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
expect_eq "credentials served after the firewall reload" e2e-second "$(printf '%s' "$out" | role_of)"
step "firewall reload -> repaired on the change event"

# ------------------------------------------- per-service and container roles
# Issue 12 and 13: two services with no AWS configuration of their own, one
# with User= (a system user) and one with DynamicUser= (a uid that is in no
# /etc/passwd, so matched by its unit), and a process in a second network
# namespace behind a bridge of the guest (a "container", matched by source
# address), each get their own role through http://169.254.169.254/. The
# test itself (root, in no entry) keeps getting the top-level role.
CTR_NS=e2ectr BR=e2ebr0
gsh "set -e
useradd --system --no-create-home --shell /usr/sbin/nologin e2eweb
ip link add $BR type bridge
ip addr add 10.77.0.1/24 dev $BR
ip link set $BR up
ip netns add $CTR_NS
ip link add e2ectr0 type veth peer name eth0 netns $CTR_NS
ip link set e2ectr0 master $BR up
ip -n $CTR_NS addr add 10.77.0.2/24 dev eth0
ip -n $CTR_NS link set lo up
ip -n $CTR_NS link set eth0 up
ip -n $CTR_NS route add default via 10.77.0.1" || fail "setting up the user, bridge and netns in the guest"
# write_roles_config HOP_LIMIT. The container's range is only in its
# roles[].sources entry: that alone must let it be served.
write_roles_config() {
	write_config "$ROLE2"
	gsh "cat >> /etc/imds-shim/imds-shim.yaml <<EOF
imds:
  hop_limit: $1
network:
  containers: [$BR]
roles:
  - role_arn: arn:aws:iam::123456789012:role/e2e-web
    users: [e2eweb]
  - role_arn: arn:aws:iam::123456789012:role/e2e-dyn
    units: [e2e-dyn.service]
  - role_arn: arn:aws:iam::123456789012:role/e2e-ctr
    sources: [10.77.0.0/24]
EOF"
}
# status_json KEY: one key of `imds-shim status --json`; a list one item a line.
status_json() {
	g imds-shim status --json | python3 -c '
import json, sys
v = json.load(sys.stdin).get(sys.argv[1], "")
print("\n".join(v) if isinstance(v, list) else v)' "$1"
}
# reload_to HOP_LIMIT: reload and wait until the daemon has applied it.
reload_to() {
	local n
	n=$(status_json reloads)
	write_roles_config "$1"
	g systemctl reload imds-shim || fail "systemctl reload (hop_limit $1)"
	for _ in $(seq 1 100); do
		[ "$(status_json reloads)" -gt "$n" ] && [ "$(status_json hop_limit)" = "$1" ] && return 0
		sleep 0.05
	done
	fail "reload to hop_limit $1 not applied: $(status_json last_reload_error)"
}
reload_to 1
expect_eq "active with per-service roles and a container bridge" active "$(g systemctl is-active imds-shim || true)"
expect_eq "the reload to roles was accepted" "" "$(status_json last_reload_error)"
# What each unconfigured client sees: the listing over IMDSv2, then the Go SDK's caller identity.
svc_client='t=$(curl -fsS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token) &&
echo "list=$(curl -fsS -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/ | tr "\n" " ")"
/xfer/goclient'
# run_service UNIT PROPERTY: a transient service, as systemd runs any other.
run_service() {
	g systemd-run --quiet --wait --pipe --collect --unit="$1" -p "$2" -E AWS_ENDPOINT_URL_STS="$STS" \
		/bin/bash -c "$svc_client" 2>&1 || true
}
# The guest's layout is the host's (hybrid here: systemd's cgroup2 mirror at
# /sys/fs/cgroup/unified). `check` says what it allows, run as a service: a
# command nsenter'd into the guest stays in a host cgroup outside the guest's
# tree (its socket shows no unit, and check's self-test then reports the
# root cgroup).
out=$(g systemd-run --quiet --wait --pipe --collect imds-shim check 2>&1 || true)
echo "  note guest cgroups: $(printf '%s\n' "$out" | sed -n 's/^cgroups: *//p')"
expect_match "check, run as a service, identifies it by its unit" "^identify: +ok .* unit=run-[^ ]*[.]service" "$out"
expect_match "check: this cgroup layout matches callers by systemd unit" "^cgroups: .*systemd unit" "$out"
out=$(run_service e2e-web.service User=e2eweb)
expect_eq "User=e2eweb service: the listing names only its role" "list=e2e-web" "$(printf '%s\n' "$out" | sed -n 's/^\(list=.*[^ ]\) *$/\1/p')"
expect_eq "User=e2eweb service: Go SDK caller identity is its role" e2e-web "$(printf '%s' "$out" | role_of)"
[ "$(printf '%s' "$out" | role_of)" = e2e-web ] || echo "         it said: $out"
out=$(run_service e2e-dyn.service DynamicUser=yes)
expect_eq "DynamicUser=yes service: the listing names only its role" "list=e2e-dyn" "$(printf '%s\n' "$out" | sed -n 's/^\(list=.*[^ ]\) *$/\1/p')"
expect_eq "DynamicUser=yes service: Go SDK caller identity is its role" e2e-dyn "$(printf '%s' "$out" | role_of)"
[ "$(printf '%s' "$out" | role_of)" = e2e-dyn ] || echo "         it said: $out"
out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
expect_eq "root, in no entry, still gets the top-level role" e2e-second "$(printf '%s' "$out" | role_of)"
expect_match "audit line names the DynamicUser unit and its role" "caller .*unit=e2e-dyn.service.*role=[^ ]*e2e-dyn" \
	"$(g journalctl -u imds-shim.service --no-pager -o cat | grep -m1 'unit=e2e-dyn.service' || true)"
step "per-service roles: User= and DynamicUser= services"

guest_net "$WORK/net.containers"
expect_match "a DNAT for containers on $BR" "^iptables .* -i $BR .*DNAT" "$(facts "$WORK/net.containers")"
ctr_tok=$(g ip netns exec "$CTR_NS" curl -fsS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token 2>&1 || true)
out=$(g ip netns exec "$CTR_NS" curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $ctr_tok" http://169.254.169.254/latest/meta-data/iam/security-credentials/ 2>&1 || true)
expect_eq "container netns behind $BR: curl IMDSv2 listing names only its sources role" e2e-ctr "$out"
doc=$(g ip netns exec "$CTR_NS" curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $ctr_tok" http://169.254.169.254/latest/meta-data/iam/security-credentials/e2e-ctr 2>&1 || true)
# Its credentials, used from the guest with the AWS CLI, are the sources role's.
out=$(printf '%s' "$doc" | g python3 -c '
import json, os, subprocess, sys
d = json.load(sys.stdin)
env = dict(os.environ, AWS_ACCESS_KEY_ID=d["AccessKeyId"], AWS_SECRET_ACCESS_KEY=d["SecretAccessKey"],
           AWS_SESSION_TOKEN=d["Token"], AWS_DEFAULT_REGION="us-east-1")
print(d["Code"], subprocess.run(["aws", "sts", "get-caller-identity", "--endpoint-url", sys.argv[1], "--output", "text",
      "--query", "Arn"], env=env, capture_output=True, text=True).stdout.strip())' "$STS" 2>&1 || true)
expect_match "container's credential document is a Success" "^Success " "$out"
expect_eq "container's credentials are the sources role's (aws sts get-caller-identity)" e2e-ctr "$(printf '%s' "$out" | role_of)"
[ "$(printf '%s' "$out" | role_of)" = e2e-ctr ] || echo "         document: ${doc:0:200} / $out"
step "container netns on $BR: its sources role"

# ------------------------------------------------ the listener across reloads
# Issue 17: a reload that changes only imds.hop_limit keeps the listening
# socket (same inode, same process) and fails no request, while a client
# loop in the guest keeps opening new connections (bounded: 30 s, 5000 pairs).
listeners=$(status_json listeners | xargs)
# listen_socks: "ADDRESS pid=P ino=I" of each socket listening on $listeners.
listen_socks() {
	local ss a
	ss=$(g ss -Hltnep)
	for a in $listeners; do
		printf '%s\n' "$ss" | awk -v a="$a" '$4 == a' | sed -n "s/.*pid=\([0-9]*\),.* ino:\([0-9]*\).*/$a pid=\1 ino=\2/p"
	done
}
sock_before=$(listen_socks)
mainpid=$(g systemctl show -p MainPID --value imds-shim)
expect_eq "the daemon's listeners ($listeners) are its sockets, one each" \
	"$(for a in $listeners; do echo "$a pid=$mainpid"; done)" "$(printf '%s\n' "$sock_before" | sed 's/ ino=[1-9][0-9]*$//')"
g rm -f /run/e2e-loop.stop /run/e2e-loop.n
gsh 'n=0 f=0 end=$((SECONDS + 30))
while [ ! -e /run/e2e-loop.stop ] && [ $n -lt 5000 ] && [ $SECONDS -lt $end ]; do
	n=$((n + 1))
	t=$(curl -fsS --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token 2>/dev/null) &&
		curl -fsS --max-time 2 -o /dev/null -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/ 2>/dev/null ||
		f=$((f + 1))
	echo $n > /run/e2e-loop.n
done
echo "$n $f"' > "$WORK/loop.txt" 2>&1 &
LOOPPID=$!
loop_n() { g cat /run/e2e-loop.n 2>/dev/null || echo 0; }
# wait_loop N: until the loop has made N more request pairs.
wait_loop() {
	local from; from=$(loop_n)
	for _ in $(seq 1 100); do
		[ "$(loop_n)" -ge $((from + $1)) ] && return 0
		kill -0 "$LOOPPID" 2>/dev/null || { fail "the client loop ended early: $(cat "$WORK/loop.txt")"; return 0; }
		sleep 0.05
	done
	fail "the client loop made no progress"
}
wait_loop 10
for hop in 2 1 2 1 2; do reload_to $hop; wait_loop 5; done
wait_loop 10
g touch /run/e2e-loop.stop
wait "$LOOPPID" || true
read -r nreq nfail < "$WORK/loop.txt" || true
expect_eq "no request failed during 5 reloads of imds.hop_limit ($nreq token+GET pairs)" 0 "$nfail"
expect_eq "the same process and listening sockets after the reloads" "$sock_before" "$(listen_socks)"
expect_eq "status shows the new hop limit" 2 "$(status_json hop_limit)"
g rm -f /run/e2e-loop.stop /run/e2e-loop.n
step "5 reloads of imds.hop_limit under a client loop"

# The guest's own test user, bridge and netns go; stop compares with before.
gsh "ip netns del $CTR_NS; ip link del $BR; userdel e2eweb" || fail "removing the test's bridge, netns and user"

# ------------------------------------------- iptables-legacy under the sandbox
# Hosts whose firewall is iptables-legacy get the rules there; that needs the
# xtables lock, the one path under /run the unit may write.
write_config "$ROLE2"
gsh 'printf "network:\n  backend: legacy\n" >> /etc/imds-shim/imds-shim.yaml'
g systemctl reload imds-shim || fail "reload to the legacy backend"
expect_eq "active on the legacy backend" active "$(g systemctl is-active imds-shim || true)"
guest_net "$WORK/net.legacy"
expect_eq "the DNAT moved to iptables-legacy" legacy "$(facts "$WORK/net.legacy" | sed -n 's/^iptables \([a-z]*\) .*DNAT.*/\1/p' | sort -u | xargs)"
out=$(g env AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1 || true)
expect_eq "credentials served through iptables-legacy" e2e-second "$(printf '%s' "$out" | role_of)"
step "reload onto iptables-legacy"

# ------------------------------------------------------------------- stop
g systemctl stop imds-shim
expect_eq "stopped" inactive "$(g systemctl is-active imds-shim || true)"
guest_net "$WORK/net.stopped"
expect_same "systemctl stop leaves addresses and iptables (nft+legacy) as before start" "$WORK/net.before" "$WORK/net.stopped"
g env DEBIAN_FRONTEND=noninteractive dpkg -i "/xfer/$DEBNAME" > "$WORK/upgrade.txt" 2>&1 || fail "reinstall while stopped failed"
expect_eq "upgrade leaves a stopped daemon stopped" inactive "$(g systemctl is-active imds-shim || true)"
step "stop; upgrade while stopped"

# --------------------------------------------------------------- watchdog
# WATCHDOG=1 keeps coming under the sandbox: with a 1 s watchdog (a drop-in,
# removed again) the daemon survives several periods without a restart.
gsh 'mkdir -p /run/systemd/system/imds-shim.service.d && printf "[Service]\nWatchdogSec=1s\n" > /run/systemd/system/imds-shim.service.d/e2e-watchdog.conf && systemctl daemon-reload'
g systemctl start imds-shim || fail "start with a 1 s watchdog"
sleep 3.5
expect_eq "watchdog: still active after 3.5 periods" active "$(g systemctl is-active imds-shim || true)"
expect_eq "watchdog: no restart" 0 "$(g systemctl show -p NRestarts --value imds-shim)"
expect_eq "watchdog: WatchdogUSec in effect" 1s "$(g systemctl show -p WatchdogUSec --value imds-shim)"
gsh 'rm -r /run/systemd/system/imds-shim.service.d && systemctl daemon-reload'
step "watchdog pings"

# ------------------------------------------------------------------ purge
guest_journal
g env DEBIAN_FRONTEND=noninteractive apt-get purge -y imds-shim > "$WORK/purge.txt" 2>&1 || { cat "$WORK/purge.txt"; fail "apt purge failed"; }
step "apt purge (while running)"
expect_eq "purge stops the daemon" inactive "$(g systemctl is-active imds-shim 2>/dev/null || true)"
expect_eq "systemd forgot the unit" "" "$(g systemctl list-units --all --no-legend --plain 'imds-shim*' | awk '{print $1}' | xargs)"
expect_eq "no unit file left" "" "$(g systemctl list-unit-files --no-legend --plain 'imds-shim*' | awk '{print $1}' | xargs)"
guest_files "$WORK/files.purged"
expect_same_lines "apt purge leaves no file of imds-shim (find / -iname '*imds*')" "$WORK/files.pristine" "$WORK/files.purged"
guest_net "$WORK/net.purged"
expect_same "apt purge leaves addresses and iptables as before install" "$WORK/net.pristine" "$WORK/net.purged"
expect_eq "dpkg knows nothing of imds-shim" "" "$(g dpkg-query -W -f='${db:Status-Abbrev}' imds-shim 2>/dev/null || true)"

# -------------------------------------------------------------- the .rpm
echo "== $(basename "$RPM")"
rq() { rpm -qp --nosignature "$@" "$RPM" 2>/dev/null; }
files=$(rq -l)
for f in /usr/bin/imds-shim /usr/lib/systemd/system/imds-shim.service /etc/imds-shim/imds-shim.yaml \
	/usr/share/man/man8/imds-shim.8.gz /usr/share/doc/imds-shim/imds-shim.example.yaml /usr/share/licenses/imds-shim/LICENSE; do
	printf '%s\n' "$files" | grep -qxF "$f" && ok "rpm contains $f" || fail "rpm lacks $f"
done
expect_eq "rpm: config is %config(noreplace) 0600" "/etc/imds-shim/imds-shim.yaml cn -rw-------" \
	"$(rq --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]' | grep '^/etc/imds-shim/imds-shim.yaml ')"
expect_match "rpm requires iptables" "^iptables" "$(rq --requires)"
scripts=$(rq --scripts)
expect_match "rpm %post reloads systemd, starts nothing" "daemon-reload" "$(printf '%s' "$scripts" | sed -n '/^postinstall/,/^preuninstall/p')"
expect_match "rpm %preun stops and cleans up on erase" "imds-shim cleanup" "$(printf '%s' "$scripts" | sed -n '/^preuninstall/,/^postuninstall/p')"
expect_match "rpm %postun restarts only if running" "try-restart" "$(printf '%s' "$scripts" | sed -n '/^postuninstall/,$p')"
expect_match "rpm has a %changelog" "imds-shim maintainers" "$(rq --changelog)"
rr=$WORK/rpmroot
# Debian's rpm warns on every install that alien exists; that is all it says.
rpm() { command rpm "$@" 2> >(grep -v -e 'use Alien instead' -e 'assuming you know what you are doing' >&2); }
rpm --root "$rr" --initdb
rpm --root "$rr" -i --nodeps --noscripts --nosignature "$RPM" && ok "rpm --root install" || fail "rpm --root install"
expect_eq "rpm --root: binary runs" ok "$("$rr/usr/bin/imds-shim" version >/dev/null 2>&1 && echo ok)"
expect_eq "rpm --root: config mode" 600 "$(stat -c %a "$rr/etc/imds-shim/imds-shim.yaml")"
rpm --root "$rr" -V --nodeps --nosignature imds-shim > "$WORK/rpmv.txt" 2>&1 && ok "rpm -V clean" || fail "rpm -V: $(cat "$WORK/rpmv.txt")"
rpm --root "$rr" -e --noscripts imds-shim && [ ! -e "$rr/usr/bin/imds-shim" ] && ok "rpm --root erase" || fail "rpm --root erase"
# elf_kind FILE: "aarch64 static" for a statically linked arm64 ELF binary.
elf_kind() {
	python3 - "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:4] == b"\x7fELF" and b[4] == 2 and b[5] == 1, "not a little-endian ELF64 file"
machine = {0xB7: "aarch64", 0x3E: "x86_64"}.get(struct.unpack_from("<H", b, 18)[0], "other")
phoff, = struct.unpack_from("<Q", b, 32)
phentsize, phnum = struct.unpack_from("<HH", b, 54)
interp = any(struct.unpack_from("<I", b, phoff + i * phentsize)[0] == 3 for i in range(phnum))
print(machine, "dynamic" if interp else "static")
PY
}
for p in "$DIST"/imds-shim_*_arm64.deb "$DIST"/imds-shim-*.aarch64.rpm; do
	case $p in
	*.deb) dpkg-deb --fsys-tarfile "$p" | tar -xOf - ./usr/bin/imds-shim > "$WORK/arm64.bin" ;;
	# rpm2cpio exits 1 on nfpm's packages after writing the whole archive
	# (rpmpack leaves the payload-size tag unset); the extracted file is checked.
	*.rpm) { rpm2cpio "$p" || true; } | cpio --quiet -i --to-stdout '*usr/bin/imds-shim' > "$WORK/arm64.bin" ;;
	esac
	expect_eq "$(basename "$p") carries a static arm64 binary" "aarch64 static" "$(elf_kind "$WORK/arm64.bin")"
done
step "rpm checks"

[ "$FAILED" = 0 ]

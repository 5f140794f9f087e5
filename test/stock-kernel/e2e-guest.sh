#!/bin/bash
# The stock-kernel suite's short end-to-end test, in the booted guest
# (stock-e2e.service): install the .deb, `systemctl enable --now` with the
# default network.link: auto, unconfigured clients (curl, the Go SDK) get
# credentials through 169.254.169.254 on the dummy link imds0, stop, and
# the network state is what it was before (pkg/internal/hoststate). Then it
# powers the guest off. The host's moto is $STS (QEMU's user network).
set -u
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
R=/xfer/results
. /xfer/env
exec > "$R/e2e.txt" 2>&1
HS=/xfer/hoststate
NPASS=0 NFAIL=0
ok() { printf '  ok   %s\n' "$*"; NPASS=$((NPASS + 1)); }
fail() { printf '  FAIL %s\n' "$*"; NFAIL=$((NFAIL + 1)); }
# check WHAT CMD...: CMD's output is shown only when it fails.
check() {
	local what=$1 out; shift
	if out=$("$@" 2>&1); then ok "$what"; else fail "$what:"; printf '%s\n' "$out" | sed 's/^/         /'; fi
}
expect_eq() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: want '$2', got '$3'"; fi; }
finish() {
	systemctl --no-pager status imds-shim > "$R/e2e-status.txt" 2>&1
	journalctl -b --no-pager -u imds-shim > "$R/e2e-journal.txt" 2>&1
	printf 'stock-kernel e2e: %d passed, %d failed\n' "$NPASS" "$NFAIL"
	[ "$NFAIL" = 0 ]; echo $? > "$R/e2e.rc"
	sync
	systemctl poweroff --no-block
	exit 0
}
trap finish EXIT

state=$(systemctl is-system-running --wait 2>&1)
echo "guest boot: $state in $(systemd-analyze time 2>/dev/null | head -n 1)"
$HS snapshot > /tmp/pristine.json || fail "hoststate snapshot"
if ! out=$(DEBIAN_FRONTEND=noninteractive dpkg -i /xfer/pkg.deb 2>&1); then fail "dpkg -i: $out"; exit 1; fi
ok "dpkg -i $(dpkg-query -W -f='${Package} ${Version}' imds-shim)"
umask 077
printf '[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n' > /etc/imds-shim/credentials
cat > /etc/imds-shim/imds-shim.yaml <<YAML
role_arn: arn:aws:iam::123456789012:role/stock-kernel
region: us-east-1
sts_endpoint: $STS
duration: 15m
credentials_file: /etc/imds-shim/credentials
YAML
umask 022
$HS snapshot > /tmp/before.json || fail "hoststate snapshot"
check "systemctl enable --now imds-shim" systemctl enable --now imds-shim
check "systemctl is-enabled" systemctl is-enabled imds-shim
expect_eq "systemctl is-active" active "$(systemctl is-active imds-shim)"
$HS show - > /tmp/running.txt
check "network.link auto created the dummy link imds0 (alias imds-shim)" grep -qx 'link imds0 kind dummy alias "imds-shim" up' /tmp/running.txt
check "169.254.169.254/32 is on imds0" grep -q '^address 169.254.169.254/32 on imds0 ' /tmp/running.txt
check "a DNAT rule redirects 169.254.169.254" grep -q 'iptables .*169.254.169.254.*DNAT' /tmp/running.txt

tok=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)
expect_eq "curl IMDSv2: role list" stock-kernel \
	"$(curl -fsS -H "X-aws-ec2-metadata-token: $tok" http://169.254.169.254/latest/meta-data/iam/security-credentials/)"
out=$(env -i PATH="$PATH" HOME=/nonexistent AWS_ENDPOINT_URL_STS="$STS" /xfer/goclient 2>&1)
expect_eq "Go SDK v2 (no AWS configuration): assumed role" stock-kernel \
	"$(printf '%s' "$out" | sed -n 's|.*assumed-role/\([^/"]*\)/.*|\1|p' | head -n 1)"
check "Go SDK got its credentials from IMDS" grep -q "source=EC2RoleProvider" <<< "$out"

check "systemctl stop imds-shim" systemctl stop imds-shim
$HS snapshot > /tmp/after.json
if d=$($HS diff /tmp/before.json /tmp/after.json); then ok "stop leaves links, addresses, iptables and sysctls as before start"
else fail "stop left a difference:"; printf '%s\n' "$d" | sed 's/^/         /'; fi
check "apt purge" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq imds-shim
$HS snapshot > /tmp/purged.json
if d=$($HS diff /tmp/pristine.json /tmp/purged.json); then ok "purge leaves the state as before install"
else fail "purge left a difference:"; printf '%s\n' "$d" | sed 's/^/         /'; fi

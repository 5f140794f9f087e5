#!/usr/bin/env bash
# imds-shim's main job, end to end, with no AWS account: in a private network
# namespace (the host's network is never touched) it starts the local moto
# STS emulator, runs the real daemon with an embedded default configuration,
# and lets AWS CLIs that have no configuration at all get credentials through
# http://169.254.169.254/. Then it stops the daemon and shows that nothing is
# left behind. Usage: sudo make demo   (or: sudo test/demo.sh [path/to/imds-shim])
set -euo pipefail

BIN=$(realpath "${1:-bin/imds-shim}")
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates a private network namespace)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo: $BIN not found; run make build" >&2; exit 1; }
# What the demo needs from the system: iptables (the redirect), curl, and
# python3 with moto (the STS emulator). A fresh Debian machine may lack
# iptables; install it rather than fail.
missing=()
for c in iptables curl; do command -v "$c" >/dev/null || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "demo: installing ${missing[*]} with apt-get" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c 'import moto' 2>/dev/null || { echo "demo: needs python3 with the moto package (python3 -m moto.server)" >&2; exit 1; }
if [ -z "${IMDS_SHIM_DEMO_NETNS:-}" ]; then
  exec unshare --net env IMDS_SHIM_DEMO_NETNS=1 "$0" "$BIN"
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ip link set lo up
work=$(mktemp -d /tmp/imds-shim-demo.XXXXXX)
# The project's state comparison (pkg/internal/hoststate): links (imds0
# included), addresses, iptables of both backends and sysctls, as facts.
hoststate=$work/hoststate
if [ -n "${IMDS_SHIM_HOSTSTATE:-}" ]; then cp "$IMDS_SHIM_HOSTSTATE" "$hoststate"
else (cd "$(dirname "$0")/.." && go build -o "$hoststate" ./pkg/internal/hoststate/cmd/hoststate); fi
"$hoststate" snapshot > "$work/before.json"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

say "starting the moto STS emulator on 127.0.0.1:5000 (inside the namespace)"
python3 -m moto.server -H 127.0.0.1 -p 5000 >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null http://127.0.0.1:5000/moto-api/ && break; sleep 0.1; done

# The embedded default: a demo role, the emulator as STS, and throwaway
# source keys in a root-only file (moto accepts any keys).
umask 077
printf '[default]\naws_access_key_id = AKIADEMODEMODEMODEMO\naws_secret_access_key = demo-secret\n' >"$work/credentials"
cat >"$work/imds-shim.yaml" <<YAML
role_arn: arn:aws:iam::123456789012:role/demo
region: us-east-1
sts_endpoint: http://127.0.0.1:5000
credentials_file: $work/credentials
duration: 1h
YAML

say "imds-shim check"
"$BIN" check -c "$work/imds-shim.yaml"

say "imds-shim serve (logs below are the daemon's)"
"$BIN" serve -c "$work/imds-shim.yaml" --runtime-dir "$work/run" &
daemon=$!
pids+=($daemon)
for _ in $(seq 1 100); do "$BIN" status --socket "$work/run/control.sock" >/dev/null 2>&1 && break; sleep 0.1; done

say "imds-shim status"
"$BIN" status --socket "$work/run/control.sock"

# A client with no AWS configuration at all: empty HOME, no AWS_* variables.
noconf() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$(dirname "$(command -v python3)") HOME="$work/home" "$@"; }
mkdir -p "$work/home"

say "IMDSv2 by hand: curl http://169.254.169.254/ (secrets elided)"
tok=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)
role=$(curl -fsS -H "X-aws-ec2-metadata-token: $tok" http://169.254.169.254/latest/meta-data/iam/security-credentials/)
echo "role listed: $role"
curl -fsS -H "X-aws-ec2-metadata-token: $tok" "http://169.254.169.254/latest/meta-data/iam/security-credentials/$role" |
  sed -E 's/("(SecretAccessKey|Token)" *: *")[^"]*"/\1…"/'
echo

for aws in "$(command -v aws || true)" /usr/bin/aws; do
  [ -x "$aws" ] || continue
  say "$("$aws" --version 2>&1 | cut -d' ' -f1) with no configuration: aws sts get-caller-identity"
  noconf "$aws" configure list || true
  noconf "$aws" sts get-caller-identity --endpoint-url http://127.0.0.1:5000 --region us-east-1
done

say "stopping imds-shim (SIGTERM)"
kill -TERM "$daemon"
wait "$daemon" && echo "exit status 0"
say "left behind: links (imds0), addresses, iptables rules and sysctls compared with before the start"
if "$hoststate" diff "$work/before.json" - ; then
  echo "nothing: the namespace is as it was before imds-shim started"
else
  echo "demo: the lines above are what imds-shim left behind" >&2
  exit 1
fi

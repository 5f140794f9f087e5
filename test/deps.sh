#!/usr/bin/env bash
# Installs what the test suite needs, once: Debian packages with apt and the
# AWS SDK for JavaScript v3 (pinned by test/js/package-lock.json) into the
# project-local test/js/node_modules. Idempotent and quick when all is there;
# `make test` and .ci/run both call it.
set -euo pipefail
cd "$(dirname "$0")/.."

# iptables/iproute2: the kernel tests; awscli: the AWS CLI v2 client tests;
# systemd-container, mmdebstrap, lintian, rpm, rpmlint: packaging and the
# booted-systemd end-to-end test; qemu-system-x86 and e2fsprogs: the
# stock-kernel suite (Debian's kernel under QEMU/TCG, its image built with
# mmdebstrap and mkfs.ext4); wrk: benchmarks; amazon-ec2-utils: its
# ec2-metadata tool, a client test in pkg/imds. python3 with moto, boto3
# and the AWS CLI v1 come with the machine image.
apt_pkgs=(iptables iproute2 awscli curl systemd-container mmdebstrap lintian rpm rpmlint wrk amazon-ec2-utils qemu-system-x86 e2fsprogs)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

lock=test/js/package-lock.json
stamp=test/js/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || ! cmp -s <(sha256sum < "$lock") test/js/node_modules/.imds-shim-lock.sha256 2>/dev/null; then
  npm ci --prefix test/js --no-audit --no-fund --loglevel=error
  sha256sum < "$lock" > test/js/node_modules/.imds-shim-lock.sha256
fi

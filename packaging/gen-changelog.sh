#!/bin/sh
# usage: gen-changelog.sh HISTORY VERSION EPOCH > changelog.yaml
# Copies the release history (chglog YAML, newest first) and, when its top
# entry is not VERSION-1, puts a generated entry for this build on top, dated
# at the commit time (EPOCH) so that the packages stay reproducible.
set -eu
history=$1 version=$2 epoch=$3
top=$(sed -n 's/^- semver: *//p' "$history" | head -n 1)
if [ "$top" != "$version-1" ]; then
	commit=$(git rev-parse --short=7 HEAD)
	cat <<EOF2
- semver: $version-1
  date: $(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  packager: imds-shim maintainers <imds-shim@users.noreply.github.com>
  deb:
    urgency: medium
    distributions: [unstable]
  changes:
    - note: Build of commit $commit.
EOF2
fi
grep -v '^#' "$history" | grep -v '^\[\]$' || true

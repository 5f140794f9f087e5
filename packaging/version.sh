#!/bin/sh
# Prints the package version derived from `git describe`, in a form that
# sorts correctly for both dpkg and rpm:
#   tag v1.2.3 on HEAD         -> 1.2.3
#   5 commits after v1.2.3     -> 1.2.3+git5.gabc1234   (after 1.2.3)
#   no v* tag yet              -> 0.0.0~git42.gabc1234  (before any release)
#   uncommitted changes        -> ... with .dirty appended
set -eu
if desc=$(git describe --tags --long --match 'v[0-9]*' --abbrev=7 2>/dev/null); then
	sha=${desc##*-g}
	rest=${desc%-g*}
	n=${rest##*-}
	tag=${rest%-*}
	base=$(printf %s "${tag#v}" | tr - "~")   # v1.2.3-rc1 -> 1.2.3~rc1
	if [ "$n" = 0 ]; then v=$base; else v="$base+git$n.g$sha"; fi
else
	v="0.0.0~git$(git rev-list --count HEAD).g$(git rev-parse --short=7 HEAD)"
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	v="$v.dirty"
fi
printf '%s\n' "$v"

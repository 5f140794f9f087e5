package callers

import (
	"errors"
	"fmt"
	"strings"
)

// UnitOf derives the systemd unit and the slices above it from a cgroup path
// of the unified hierarchy ("/system.slice/system-foo.slice/foo@1.service").
//
// Only the system manager's own names count: the path must begin with zero or
// more *.slice components, and the first *.service or *.scope after them is
// the unit. Everything below that unit is ignored, because a unit may own
// that part of the tree: a service with Delegate=yes, and every user's
// user@UID.service, whose user manager (or the user, by mkdir) names its own
// sub-cgroups. So a user's `systemctl --user start backup.service` runs in
// /user.slice/user-1000.slice/user@1000.service/app.slice/backup.service and
// its unit is user@1000.service, never backup.service. A path that leaves
// the slices for anything else (a cgroup created by hand, "/docker/<id>")
// has no unit. Names are unescaped as systemd escapes them (a leading "_").
func UnitOf(path string) (unit string, slices []string) {
	for c := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		c = strings.TrimPrefix(c, "_") // systemd's cg_escape prefixes "_"
		switch {
		case strings.HasSuffix(c, ".slice") && len(c) > len(".slice"):
			slices = append(slices, c)
		case (strings.HasSuffix(c, ".service") && len(c) > len(".service")) ||
			(strings.HasSuffix(c, ".scope") && len(c) > len(".scope")):
			return c, slices
		default:
			return "", slices
		}
	}
	return "", slices
}

// ValidateUnit checks a `units` entry: a systemd unit name ending in
// .service or .scope, a template ("name@.service", matching every instance),
// or a slice (.slice, matching every unit under it). Unit names are at most
// 255 bytes of ASCII letters, digits and ":-_.\@".
func ValidateUnit(name string) error {
	var suffix string
	for _, s := range []string{".service", ".scope", ".slice"} {
		if strings.HasSuffix(name, s) {
			suffix = s
		}
	}
	if suffix == "" {
		return fmt.Errorf("%q is not a unit or slice name (it must end in .service, .scope or .slice)", name)
	}
	if len(name) > 255 || len(name) == len(suffix) {
		return fmt.Errorf("%q is not a valid unit name", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(":-_.\\@", r)) {
			return fmt.Errorf("%q is not a valid unit name (character %q)", name, r)
		}
	}
	if strings.HasPrefix(name, "@") || (suffix == ".slice" && strings.Contains(name, "@")) {
		return fmt.Errorf("%q is not a valid unit name", name)
	}
	return nil
}

// errNoMatcher is returned for an entry that names nothing to match.
var errNoMatcher = errors.New("no matcher: give at least one of units, users, groups or sources")

// unitMatches reports whether a `units` entry item names the caller's unit,
// one of its slices, or the template the unit is an instance of.
func unitMatches(item, unit string, slices []string) bool {
	if unit == "" {
		return false // a caller outside any unit is not under any slice either
	}
	if item == unit {
		return true
	}
	if strings.HasSuffix(item, ".slice") {
		for _, s := range slices {
			if s == item {
				return true
			}
		}
		return false
	}
	// "foo@.service" matches "foo@bar.service".
	if prefix, suffix, ok := strings.Cut(item, "@."); ok {
		return strings.HasPrefix(unit, prefix+"@") && strings.HasSuffix(unit, "."+suffix) &&
			len(unit) > len(prefix)+1+1+len(suffix)
	}
	return false
}

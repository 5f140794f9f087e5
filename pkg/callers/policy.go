package callers

import (
	"errors"
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
)

// Entry is one element of `roles`, in file order. An entry matches a caller
// when any one of its matchers does (they list the entry's principals, as a
// sudoers line lists users and groups):
//
//   - Units: the host caller's systemd unit, a slice it runs under
//     ("system-foo.slice"), or a template it is an instance of
//     ("foo@.service"); see UnitOf for which unit a cgroup belongs to.
//   - Users: a user name, matching a host caller whose uid has that name in
//     /etc/passwd, or a numeric uid ("1001"), matching that uid whether or not
//     it has a name (the only way, besides Units, to match a DynamicUser=).
//   - Groups: the host caller's primary group (from its /etc/passwd entry), by
//     name or numeric gid. Supplementary groups are not seen: the kernel
//     records only the socket's uid.
//   - Sources: the source address of a caller from another network namespace
//     (a container). Host callers never match Sources, and callers from
//     containers match nothing else.
type Entry struct {
	Role    string // opaque here: an ARN, a name; returned by Match
	Units   []string
	Users   []string
	Groups  []string
	Sources []netip.Prefix
}

// Policy decides which role a caller gets: the first entry that matches, in
// order; else the default role, if there is one. An Unidentified caller
// matches no entry and gets the default only when UnidentifiedDefault is set.
type Policy struct {
	entries []entry
	def     string
	hasDef  bool
	unidDef bool
}

type entry struct {
	Entry
	uids      []uint32
	names     []string
	gids      []uint32
	groups    []string
	prefixes  []netip.Prefix
	hostMatch bool // has any matcher a host caller can meet
}

// Match is a Policy's answer for one caller.
type Match struct {
	// OK is false when the caller gets no role (then Role is "" and Entry -1).
	OK   bool
	Role string
	// Entry is the index of the entry that matched, or -1 when the role is
	// the default one.
	Entry int
}

// PolicyError is one problem with a Policy's entries; Path names it by its
// YAML key ("roles[2].units[0]").
type PolicyError struct {
	Path string
	Err  error
}

func (e *PolicyError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *PolicyError) Unwrap() error { return e.Err }

// Default is the role of callers that match no entry: the configuration's
// top-level role.
type Default struct {
	// Role is that role; "" means there is none and such callers get no role.
	Role string
	// Unidentified gives Role to unidentified callers too (the
	// configuration's `unidentified: default`); by default they get none.
	Unidentified bool
}

// NewPolicy checks entries and builds a Policy. Every problem is reported,
// each as a *PolicyError, joined.
func NewPolicy(entries []Entry, def Default) (*Policy, error) {
	p := &Policy{def: def.Role, hasDef: def.Role != "", unidDef: def.Unidentified && def.Role != ""}
	var errs []error
	bad := func(path string, err error) { errs = append(errs, &PolicyError{Path: path, Err: err}) }
	for i, in := range entries {
		e := entry{Entry: in}
		at := fmt.Sprintf("roles[%d]", i)
		if len(in.Units)+len(in.Users)+len(in.Groups)+len(in.Sources) == 0 {
			bad(at, errNoMatcher)
		}
		for j, u := range in.Units {
			if err := ValidateUnit(u); err != nil {
				bad(fmt.Sprintf("%s.units[%d]", at, j), err)
			}
		}
		for j, u := range in.Users {
			if n, ok := parseID(u); ok {
				e.uids = append(e.uids, n)
			} else if err := validateName(u); err != nil {
				bad(fmt.Sprintf("%s.users[%d]", at, j), fmt.Errorf("%q is neither a user name nor a numeric uid: %w", u, err))
			} else {
				e.names = append(e.names, u)
			}
		}
		for j, g := range in.Groups {
			if n, ok := parseID(g); ok {
				e.gids = append(e.gids, n)
			} else if err := validateName(g); err != nil {
				bad(fmt.Sprintf("%s.groups[%d]", at, j), fmt.Errorf("%q is neither a group name nor a numeric gid: %w", g, err))
			} else {
				e.groups = append(e.groups, g)
			}
		}
		for j, s := range in.Sources {
			if !s.IsValid() {
				bad(fmt.Sprintf("%s.sources[%d]", at, j), errors.New("not a valid address prefix"))
				continue
			}
			e.prefixes = append(e.prefixes, unmapPrefix(s))
		}
		e.hostMatch = len(in.Units)+len(in.Users)+len(in.Groups) > 0
		p.entries = append(p.entries, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// parseID reads a numeric uid or gid. (uid_t)-1 is "no id" to the kernel and
// never matches.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// validateName accepts what /etc/passwd and /etc/group can hold as a name:
// not empty, not all digits (that is an id, and this one is out of range),
// no ':' (the field separator), no whitespace or control characters.
func validateName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.Trim(s, "0123456789") == "" {
		return errors.New("ids range from 0 to 4294967294")
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == ':' || r == 0x7f || r == ',' }) {
		return errors.New("contains ':', ',', whitespace or a control character")
	}
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return errors.New("begins with '-' or '+'")
	}
	return nil
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n ≥ 96) into a.b.c.d/(n-96): callers'
// addresses are unmapped before matching.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p
}

// Match returns the role for c.
func (p *Policy) Match(c Caller) Match {
	if c.Kind != Unidentified {
		for i := range p.entries {
			if p.entries[i].matches(c) {
				return Match{OK: true, Role: p.entries[i].Role, Entry: i}
			}
		}
	}
	if p.hasDef && (c.Kind != Unidentified || p.unidDef) {
		return Match{OK: true, Role: p.def, Entry: -1}
	}
	return Match{Entry: -1}
}

func (e *entry) matches(c Caller) bool {
	switch c.Kind {
	case Source:
		a := c.Source.Addr().Unmap()
		for _, p := range e.prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	case Host:
		if !e.hostMatch {
			return false
		}
		for _, u := range e.Units {
			if unitMatches(u, c.Unit, c.Slices) {
				return true
			}
		}
		for _, u := range e.uids {
			if u == c.UID {
				return true
			}
		}
		if c.User != "" {
			for _, n := range e.names {
				if n == c.User {
					return true
				}
			}
		}
		if c.HasGID {
			for _, g := range e.gids {
				if g == c.GID {
					return true
				}
			}
			if c.Group != "" {
				for _, n := range e.groups {
					if n == c.Group {
						return true
					}
				}
			}
		}
	}
	return false
}

// Unresolved lists the user and group names of the entries that this host's
// /etc/passwd and /etc/group do not know (yet), by YAML key, for `imds-shim
// check` and a warning at start: such a name matches nobody until it exists.
// A DynamicUser= service's user is one of them; match it by unit instead.
func (p *Policy) Unresolved() []string {
	var out []string
	for i, e := range p.entries {
		for j, u := range e.Users {
			if _, ok := parseID(u); ok {
				continue
			}
			if _, err := user.Lookup(u); err != nil {
				out = append(out, fmt.Sprintf("roles[%d].users[%d]: no user %q in /etc/passwd: it matches nobody", i, j, u))
			}
		}
		for j, g := range e.Groups {
			if _, ok := parseID(g); ok {
				continue
			}
			if _, err := user.LookupGroup(g); err != nil {
				out = append(out, fmt.Sprintf("roles[%d].groups[%d]: no group %q in /etc/group: it matches nobody", i, j, g))
			}
		}
	}
	return out
}

// UsesUnits reports whether any entry matches by unit, which a cgroup v1
// host cannot do (see Layout.Units).
func (p *Policy) UsesUnits() bool {
	for _, e := range p.entries {
		if len(e.Units) > 0 {
			return true
		}
	}
	return false
}

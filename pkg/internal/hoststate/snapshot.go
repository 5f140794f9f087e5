package hoststate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Snapshot is the state of one network namespace, as facts.
type Snapshot struct {
	Links    []Link            `json:"links"`
	Addrs    []Addr            `json:"addresses"`
	Iptables []Rule            `json:"iptables"`
	Sysctls  map[string]string `json:"sysctls"`
	// Netns is nil unless Take was asked for the named namespaces.
	Netns []string `json:"netns,omitempty"`
}

// Link is a network interface.
type Link struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"` // netlink's kind: "device" (lo, physical), "dummy", "veth", ...
	Alias string `json:"alias,omitempty"`
	Up    bool   `json:"up"`
}

func (l Link) String() string {
	s := fmt.Sprintf("link %s kind %s", l.Name, l.Kind)
	if l.Alias != "" {
		s += fmt.Sprintf(" alias %q", l.Alias)
	}
	if l.Up {
		return s + " up"
	}
	return s + " down"
}

// Addr is an address on a link.
type Addr struct {
	Link   string `json:"link"`
	Prefix string `json:"prefix"` // 169.254.169.254/32
	Scope  string `json:"scope"`  // host, link, global, ...
	Label  string `json:"label,omitempty"`
}

func (a Addr) String() string {
	s := fmt.Sprintf("address %s on %s scope %s", a.Prefix, a.Link, a.Scope)
	if a.Label != "" {
		s += " label " + a.Label
	}
	return s
}

// Rule is an iptables rule, a user chain (Spec "user chain") or a built-in
// chain's policy other than ACCEPT (Spec "policy DROP").
type Rule struct {
	Backend string `json:"backend"` // nft or legacy
	Family  string `json:"family"`  // ipv4 or ipv6
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Spec    string `json:"spec"` // the rule as iptables-save prints it, "-A CHAIN ..."
}

func (r Rule) String() string {
	if strings.HasPrefix(r.Spec, "-A ") {
		return fmt.Sprintf("iptables %s %s %s: %s", r.Backend, r.Family, r.Table, r.Spec)
	}
	return fmt.Sprintf("iptables %s %s %s: chain %s %s", r.Backend, r.Family, r.Table, r.Chain, r.Spec)
}

// normalise sorts everything, so that equal states give equal snapshots and
// the same file.
func (s *Snapshot) normalise() {
	slices.SortFunc(s.Links, func(a, b Link) int { return cmp.Compare(a.String(), b.String()) })
	slices.SortFunc(s.Addrs, func(a, b Addr) int { return cmp.Compare(a.String(), b.String()) })
	// Rules keep their order within a chain (it matters to iptables); the
	// chains are sorted.
	slices.SortStableFunc(s.Iptables, func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Backend, b.Backend), cmp.Compare(a.Family, b.Family),
			cmp.Compare(a.Table, b.Table), cmp.Compare(a.Chain, b.Chain), cmp.Compare(kindOrder(a), kindOrder(b)))
	})
	slices.Sort(s.Netns)
	if s.Sysctls == nil {
		s.Sysctls = map[string]string{}
	}
}

// kindOrder puts a chain's policy or declaration before its rules.
func kindOrder(r Rule) int {
	if strings.HasPrefix(r.Spec, "-A ") {
		return 1
	}
	return 0
}

// Facts is the snapshot as one line per fact, sorted as the snapshot is:
// what `hoststate show` prints and what Diff compares.
func (s *Snapshot) Facts() []string {
	var out []string
	for _, l := range s.Links {
		out = append(out, l.String())
	}
	for _, a := range s.Addrs {
		out = append(out, a.String())
	}
	for i, r := range s.Iptables {
		f := r.String()
		if strings.HasPrefix(r.Spec, "-A ") {
			// The position in the chain is part of the fact: the same
			// rules in another order are another firewall.
			f = fmt.Sprintf("%s (#%d in chain)", f, position(s.Iptables, i))
		}
		out = append(out, f)
	}
	keys := make([]string, 0, len(s.Sysctls))
	for k := range s.Sysctls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, fmt.Sprintf("sysctl %s = %s", k, s.Sysctls[k]))
	}
	if s.Netns != nil {
		for _, n := range s.Netns {
			out = append(out, "netns "+n)
		}
	}
	return out
}

// position is the 1-based position of rule i among the rules of its chain.
func position(rules []Rule, i int) int {
	n := 0
	for j := 0; j <= i; j++ {
		r := rules[j]
		if r.Backend == rules[i].Backend && r.Family == rules[i].Family && r.Table == rules[i].Table &&
			r.Chain == rules[i].Chain && strings.HasPrefix(r.Spec, "-A ") {
			n++
		}
	}
	return n
}

// Diff describes how after differs from s, one line per fact: "- fact" for
// what s has and after has not, "+ fact" for the reverse. It is empty when
// the two are the same state.
func (s *Snapshot) Diff(after *Snapshot) string {
	a, b := s.Facts(), after.Facts()
	if s.Netns == nil || after.Netns == nil {
		a, b = dropNetns(a), dropNetns(b)
	}
	inB := map[string]int{}
	for _, f := range b {
		inB[f]++
	}
	inA := map[string]int{}
	for _, f := range a {
		inA[f]++
	}
	var out strings.Builder
	for _, f := range a {
		if inB[f] > 0 {
			inB[f]--
			continue
		}
		fmt.Fprintf(&out, "- %s\n", f)
	}
	for _, f := range b {
		if inA[f] > 0 {
			inA[f]--
			continue
		}
		fmt.Fprintf(&out, "+ %s\n", f)
	}
	return out.String()
}

func dropNetns(facts []string) []string {
	return slices.DeleteFunc(slices.Clone(facts), func(f string) bool { return strings.HasPrefix(f, "netns ") })
}

// Has reports whether the snapshot holds a fact containing every one of
// the given substrings, e.g. Has("address 169.254.169.254/32 on imds0").
func (s *Snapshot) Has(substrings ...string) bool {
	for _, f := range s.Facts() {
		all := true
		for _, sub := range substrings {
			if !strings.Contains(f, sub) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// Write writes the snapshot as JSON.
func (s *Snapshot) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// Read reads a snapshot that Write wrote.
func Read(r io.Reader) (*Snapshot, error) {
	var s Snapshot
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("reading a snapshot: %w", err)
	}
	s.normalise()
	return &s, nil
}

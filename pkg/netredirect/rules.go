package netredirect

import (
	"fmt"
	"strconv"
	"strings"
)

// Rule is one iptables rule imds-shim installs.
type Rule struct {
	Table string // "nat" or "filter"
	Chain string // the chain the rule lives in
	// Position is 1 for a jump inserted first in a built-in chain and 0 for
	// a rule appended to an owned chain.
	Position int
	// Args is the rulespec exactly as `iptables -S` prints it after
	// "-A <chain>", so the installed rule can be compared as text.
	Args []string
}

// String renders r as `iptables -S` prints it.
func (r Rule) String() string { return "-A " + r.Chain + " " + joinArgs(r.Args) }

// restoreLine renders r as an iptables-restore line.
func (r Rule) restoreLine() string {
	if r.Position > 0 {
		return fmt.Sprintf("-I %s %d %s", r.Chain, r.Position, joinArgs(r.Args))
	}
	return r.String()
}

// owned reports whether chain is a chain imds-shim owns.
func owned(chain string) bool { return strings.HasPrefix(chain, ChainPrefix) }

// Plan returns the rules for cfg (defaults applied) in installation order:
// the rules of each owned chain before the jump that makes it reachable, so
// no packet ever meets a half-filled chain. The same rulespecs are used to
// add, find and delete, so they cannot drift apart.
func Plan(cfg Config) []Rule {
	cfg = cfg.WithDefaults()
	dst := []string{"-d", cfg.prefix().String(), "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(cfg.Port)),
		"-m", "comment", "--comment", Comment}
	jump := func(chain string) []string { return []string{"-m", "comment", "--comment", Comment, "-j", chain} }
	return []Rule{
		{Table: "nat", Chain: natChain, Args: append(dst[:len(dst):len(dst)], "-j", "DNAT", "--to-destination", cfg.Target.String())},
		{Table: "nat", Chain: "OUTPUT", Position: 1, Args: jump(natChain)},
		{Table: "filter", Chain: filterChain, Args: append(dst[:len(dst):len(dst)], "-j", "ACCEPT")},
		{Table: "filter", Chain: "FORWARD", Position: 1, Args: jump(filterChain)},
	}
}

// tables lists the tables Plan uses, in order.
var tables = []string{"nat", "filter"}

// Render describes, without touching the host, what Setup would install for
// c: the link and address, then the rules as iptables-restore input. It is
// what `imds-shim check` prints.
func (c Config) Render() string {
	c = c.WithDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "# imds-shim network plan: nothing below is applied by printing it\n")
	fmt.Fprintf(&b, "# redirect: tcp %s:%d -> %s\n", c.Addr, c.Port, c.Target)
	switch c.Link {
	case LinkAuto:
		fmt.Fprintf(&b, "# address:  %s scope host label %q on dummy link %s (alias %q, created and removed by imds-shim)\n",
			c.prefix(), label(c.DummyName), c.DummyName, LinkAlias)
		fmt.Fprintf(&b, "#           or, where the kernel has no dummy driver, label %q on lo\n", label(LinkLo))
	case LinkDummy:
		fmt.Fprintf(&b, "# address:  %s scope host label %q on dummy link %s (alias %q, created and removed by imds-shim)\n",
			c.prefix(), label(c.DummyName), c.DummyName, LinkAlias)
	case LinkLo:
		fmt.Fprintf(&b, "# address:  %s scope host label %q on lo\n", c.prefix(), label(LinkLo))
	default:
		fmt.Fprintf(&b, "# address:  %s scope host label %q on existing link %s (the link itself is left alone)\n",
			c.prefix(), label(c.Link), c.Link)
	}
	switch c.Backend {
	case BackendAuto:
		fmt.Fprintf(&b, "# backend:  auto (iptables-nft or iptables-legacy, whichever the host already uses)\n")
	default:
		fmt.Fprintf(&b, "# backend:  iptables-%s\n", c.Backend)
	}
	fmt.Fprintf(&b, "# repaired: on address removal and every %s\n", c.ReconcileInterval)
	rules := Plan(c)
	for _, t := range tables {
		fmt.Fprintf(&b, "*%s\n", t)
		for _, r := range rules {
			if r.Table == t && owned(r.Chain) {
				fmt.Fprintf(&b, ":%s - [0:0]\n", r.Chain)
			}
		}
		for _, r := range rules {
			if r.Table == t && r.Position == 0 {
				fmt.Fprintln(&b, r.restoreLine())
			}
		}
		for _, r := range rules {
			if r.Table == t && r.Position > 0 {
				fmt.Fprintln(&b, r.restoreLine())
			}
		}
		fmt.Fprintf(&b, "COMMIT\n")
	}
	return b.String()
}

// joinArgs joins rulespec words the way iptables prints them: a word with
// blanks or quotes is double-quoted with `"` and `\` escaped.
func joinArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n\"\\'") {
			out[i] = a
			continue
		}
		out[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
	}
	return strings.Join(out, " ")
}

// splitArgs splits a rulespec printed by `iptables -S` into words, undoing
// the quoting of joinArgs.
func splitArgs(s string) ([]string, error) {
	var (
		words   []string
		cur     strings.Builder
		inWord  bool
		inQuote bool
	)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case inQuote && ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case inQuote && ch == '"':
			inQuote = false
		case inQuote:
			cur.WriteByte(ch)
		case ch == '"':
			inQuote, inWord = true, true
		case ch == ' ' || ch == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("parsing rule %q: unterminated quote", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// tableState is one table as `iptables -t TABLE -S` prints it.
type tableState struct {
	chains []string            // built-in and user chains, in listing order
	rules  map[string][]string // chain -> rulespecs (the text after "-A <chain> ")
}

// parseTable reads the lines of `iptables -t TABLE -S`.
func parseTable(lines []string) (tableState, error) {
	st := tableState{rules: map[string][]string{}}
	for _, l := range lines {
		l = strings.TrimSpace(l)
		f := strings.SplitN(l, " ", 3)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case (f[0] == "-P" || f[0] == "-N") && len(f) >= 2:
			st.chains = append(st.chains, f[1])
		case f[0] == "-A" && len(f) == 3:
			st.rules[f[1]] = append(st.rules[f[1]], f[2])
		default:
			return tableState{}, fmt.Errorf("parsing iptables listing: unexpected line %q", l)
		}
	}
	return st, nil
}

func (st tableState) hasChain(name string) bool {
	for _, c := range st.chains {
		if c == name {
			return true
		}
	}
	return false
}

// jumpTarget returns the chain a rulespec jumps to, or "".
func jumpTarget(spec string) string {
	words, err := splitArgs(spec)
	if err != nil {
		return ""
	}
	for i := 0; i+1 < len(words); i++ {
		if words[i] == "-j" || words[i] == "-g" {
			return words[i+1]
		}
	}
	return ""
}

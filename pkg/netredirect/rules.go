package netredirect

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule is one iptables rule imds-shim installs.
type Rule struct {
	IPv6  bool   // an ip6tables rule
	ARP   bool   // an arptables rule
	Table string // "nat" or "filter"
	Chain string // the chain the rule lives in
	// Position is 1 for a jump inserted first in a built-in chain and 0 for
	// a rule appended to an owned chain.
	Position int
	// Args is the rulespec exactly as `iptables -S` prints it after
	// "-A <chain>", so the installed rule can be compared as text.
	Args []string
}

// String renders r as `iptables -S` (or `ip6tables -S`) prints it.
func (r Rule) String() string { return "-A " + r.Chain + " " + joinArgs(r.Args) }

// Family is "iptables" or "ip6tables", the command that installs r.
func (r Rule) Family() string {
	if r.ARP {
		return "arptables"
	}
	if r.IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// restoreLine renders r as an iptables-restore line.
func (r Rule) restoreLine() string {
	if r.Position > 0 {
		return fmt.Sprintf("-I %s %d %s", r.Chain, r.Position, joinArgs(r.Args))
	}
	return r.String()
}

// owned reports whether chain is a chain imds-shim owns.
func owned(chain string) bool { return strings.HasPrefix(chain, ChainPrefix) }

// Plan returns the rules for cfg (defaults applied) in installation order,
// IPv4 first, then IPv6 unless cfg.IPv6 is "false" (with "auto" they are
// installed only where the host has IPv6). Within a family the rules of each
// owned chain come before the jump that makes it reachable, so no packet
// ever meets a half-filled chain. The same rulespecs are used to add, find
// and delete, so they cannot drift apart.
func Plan(cfg Config) []Rule {
	cfg = cfg.WithDefaults()
	rules := plan(cfg, false)
	if cfg.IPv6 != IPv6False {
		rules = append(rules, plan(cfg, true)...)
	}
	return append(rules, planARP(cfg)...)
}

// planARP keeps the host from answering ARP for Addr on any link:
//
//	arptables filter IMDS-SHIM-ARP  DROP requests for Addr
//
// Local callers never ARP for a local address, and containers reach it
// through their gateway. arptables has no comment match: the chain's name
// is the mark. The spec is as `arptables -S` prints it (opcode 1: Request).
func planARP(cfg Config) []Rule {
	return []Rule{
		{ARP: true, Table: "filter", Chain: arpChain, Args: []string{"-j", "DROP", "-d", cfg.Addr.String(), "--opcode", "1"}},
		{ARP: true, Table: "filter", Chain: "INPUT", Position: 1, Args: []string{"-j", arpChain}},
	}
}

// plan returns the rules of one family:
//
//	nat    IMDS-SHIM-OUTPUT      DNAT tcp to Addr:Port -> Target (the host's callers)
//	nat    IMDS-SHIM-PREROUTING  the same, -i each of Containers
//	filter IMDS-SHIM-INPUT       RETURN from lo; ACCEPT tcp to Target from each of
//	                             Containers; DROP the rest to Addr (and to Target
//	                             when it is another non-loopback address)
//
// For IPv6, Addr is fd00:ec2::254 and Target is IPv6Target(Target).
func plan(cfg Config, v6 bool) []Rule {
	comment := []string{"-m", "comment", "--comment", Comment}
	addr, target := cfg.prefix(), cfg.Target
	if v6 {
		addr, target = cfg.prefix6(), IPv6Target(cfg.Target)
	}
	tport := strconv.Itoa(int(target.Port()))
	tcp := func(port string) []string { return []string{"-p", "tcp", "-m", "tcp", "--dport", port} }
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	dnat := []string{"-j", "DNAT", "--to-destination", target.String()}
	jump := func(chain string) []string { return cat(comment, []string{"-j", chain}) }
	dst := []string{"-d", addr.String()}
	tdst := []string{"-d", netip.PrefixFrom(target.Addr(), target.Addr().BitLen()).String()}
	mk := func(table, chain string, pos int, args []string) Rule {
		return Rule{IPv6: v6, Table: table, Chain: chain, Position: pos, Args: args}
	}

	rules := []Rule{
		mk("nat", natChain, 0, cat(dst, tcp(strconv.Itoa(int(cfg.Port))), comment, dnat)),
		mk("nat", "OUTPUT", 1, jump(natChain)),
	}
	if len(cfg.Containers) > 0 {
		for _, b := range cfg.Containers {
			rules = append(rules, mk("nat", preroutChain, 0, cat(dst, []string{"-i", b}, tcp(strconv.Itoa(int(cfg.Port))), comment, dnat)))
		}
		rules = append(rules, mk("nat", "PREROUTING", 1, jump(preroutChain)))
	}
	rules = append(rules, mk("filter", fenceChain, 0, cat([]string{"-i", "lo"}, comment, []string{"-j", "RETURN"})))
	for _, b := range cfg.Containers {
		rules = append(rules, mk("filter", fenceChain, 0, cat(tdst, []string{"-i", b}, tcp(tport), comment, []string{"-j", "ACCEPT"})))
	}
	rules = append(rules, mk("filter", fenceChain, 0, cat(dst, comment, []string{"-j", "DROP"})))
	if ta := target.Addr(); ta != addr.Addr() && !ta.IsLoopback() {
		rules = append(rules, mk("filter", fenceChain, 0, cat(tdst, tcp(tport), comment, []string{"-j", "DROP"})))
	}
	return append(rules, mk("filter", "INPUT", 1, jump(fenceChain)))
}

// rulesOf returns the rules of plan in one family.
func rulesOf(plan []Rule, v6 bool) []Rule {
	var out []Rule
	for _, r := range plan {
		if r.IPv6 == v6 && !r.ARP {
			out = append(out, r)
		}
	}
	return out
}

// arpRules returns the arptables rules of plan.
func arpRules(plan []Rule) []Rule {
	var out []Rule
	for _, r := range plan {
		if r.ARP {
			out = append(out, r)
		}
	}
	return out
}

// arpTables lists the arptables tables Plan uses.
var arpTables = []string{"filter"}

// tables lists the tables Plan uses, in order.
var tables = []string{"nat", "filter"}

// Listeners returns the addresses the daemon must listen on for c: Target,
// and IPv6Target(Target) when ipv6 is true (see Redirector.Listeners, which
// knows whether "auto" found IPv6).
func (c Config) Listeners(ipv6 bool) []netip.AddrPort {
	c = c.WithDefaults()
	ls := []netip.AddrPort{c.Target}
	if ipv6 {
		ls = append(ls, IPv6Target(c.Target))
	}
	return ls
}

// Render describes, without touching the host, what Setup would install for
// c: the link and addresses, the listeners the daemon binds, then the rules
// as iptables-restore and ip6tables-restore input. It is what `imds-shim
// check` prints.
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
	switch c.IPv6 {
	case IPv6False:
		fmt.Fprintf(&b, "# ipv6:     off\n")
	default:
		when := "only where the host has IPv6 (auto)"
		if c.IPv6 == IPv6True {
			when = "required"
		}
		fmt.Fprintf(&b, "# ipv6:     %s nodad on the same link, tcp [%s]:%d -> %s, %s\n",
			c.prefix6(), addr6, c.Port, IPv6Target(c.Target), when)
	}
	ls := []string{c.Target.String()}
	if c.IPv6 != IPv6False {
		ls = append(ls, IPv6Target(c.Target).String()+" (with ipv6)")
	}
	fmt.Fprintf(&b, "# listens:  %s\n", strings.Join(ls, ", "))
	if len(c.Containers) == 0 {
		fmt.Fprintf(&b, "# callers:  this host's processes only (no containers bridges)\n")
		fmt.Fprintf(&b, "# fence:    packets to the endpoint (and a non-loopback listener) that do not come from lo are dropped\n")
	} else {
		fmt.Fprintf(&b, "# callers:  this host's processes and containers on %s (a bridge that does not exist yet matches once it appears)\n",
			strings.Join(c.Containers, ", "))
		fmt.Fprintf(&b, "# fence:    packets to the endpoint and listener that come neither from lo nor, to the listener port, from those bridges are dropped\n")
	}
	switch c.Backend {
	case BackendAuto:
		fmt.Fprintf(&b, "# backend:  auto (iptables-nft or iptables-legacy, whichever the host already uses)\n")
	default:
		fmt.Fprintf(&b, "# backend:  iptables-%s\n", c.Backend)
	}
	fmt.Fprintf(&b, "# arp:      requests for %s are dropped on every link (arptables, where installed)\n", c.Addr)
	fmt.Fprintf(&b, "# repaired: on address removal, on ruleset changes (nft backend), and every %s\n", c.ReconcileInterval)
	all := Plan(c)
	for _, v6 := range []bool{false, true} {
		rules := rulesOf(all, v6)
		if len(rules) == 0 {
			continue
		}
		fmt.Fprintf(&b, "# %s-restore input\n", rules[0].Family())
		renderRestore(&b, rules, tables)
	}
	fmt.Fprintf(&b, "# arptables-restore input\n")
	renderRestore(&b, arpRules(all), arpTables)
	return b.String()
}

// renderRestore writes rules (of one family) as iptables-restore input.
func renderRestore(b *strings.Builder, rules []Rule, tables []string) {
	for _, t := range tables {
		fmt.Fprintf(b, "*%s\n", t)
		declared := map[string]bool{}
		for _, r := range rules {
			if r.Table == t && owned(r.Chain) && !declared[r.Chain] {
				declared[r.Chain] = true
				fmt.Fprintf(b, ":%s - [0:0]\n", r.Chain)
			}
		}
		for _, r := range rules {
			if r.Table == t && r.Position == 0 {
				fmt.Fprintln(b, r.restoreLine())
			}
		}
		for _, r := range rules {
			if r.Table == t && r.Position > 0 {
				fmt.Fprintln(b, r.restoreLine())
			}
		}
		fmt.Fprintf(b, "COMMIT\n")
	}
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

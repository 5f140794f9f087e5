package netredirect

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// faults makes the fakes fail on the n-th call (reads included), counting
// across all fakes that share it, so a test can break Setup at every step.
type faults struct {
	mu     sync.Mutex
	calls  int
	failAt int // 0: never
}

var errInjected = errors.New("injected failure")

func (f *faults) hit(op string) error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == f.failAt {
		return fmt.Errorf("%s: %w (call %d)", op, errInjected, f.calls)
	}
	return nil
}

// fakeIPTError is what the fake iptables returns; like *iptables.Error it
// can say that a rule or chain does not exist.
type fakeIPTError struct {
	msg      string
	notExist bool
}

func (e *fakeIPTError) Error() string    { return e.msg }
func (e *fakeIPTError) IsNotExist() bool { return e.notExist }

var builtinChains = builtins

// fakeTable is one table as the kernel holds it.
type fakeTable struct {
	chains []string            // built-ins first, then user chains in creation order
	rules  map[string][]string // chain -> canonical rulespecs
}

// fakeIPTables models one backend's tables as state, with the kernel's
// refusals: no rule in or jump to a missing chain, no deleting a chain that
// is referenced, no duplicate chain. Legacy tables come into existence when
// first touched, as in the kernel.
type fakeIPTables struct {
	mu     sync.Mutex
	legacy bool
	v6     bool
	arp    bool // arptables: its own built-in chains, specs stored as given (see canonical)
	tables map[string]*fakeTable
	faults *faults
	// restores counts Restore calls; restoreErr, when set, fails them.
	restores   int
	restoreErr error
}

func newFakeIPTables(legacy, v6 bool, f *faults) *fakeIPTables {
	return &fakeIPTables{legacy: legacy, v6: v6, tables: map[string]*fakeTable{}, faults: f}
}

// builtins are the built-in chains of table in this fake.
func (x *fakeIPTables) builtins(table string) []string {
	if x.arp {
		return []string{"INPUT", "OUTPUT"}
	}
	return builtinChains[table]
}

// canonical is canonical for iptables and ip6tables. arptables prints its
// few options in an order of its own (target first); the fake stores them
// as given, and TestKernelPlanIsWhatIptablesPrints holds the arptables plan
// to what arptables prints.
func (x *fakeIPTables) canonical(spec []string) ([]string, error) {
	if x.arp {
		return spec, nil
	}
	return canonical(spec, x.v6)
}

// canonical rewrites a rulespec the way the kernel stores it and `iptables
// -S` prints it back (checked against iptables 1.8.9, both backends): the
// basic matches first in the order -s -d -i -o -p, each address with its
// prefix length; a --dport or --sport without its match gets the implicit
// `-m tcp` (or udp) where it appears; then the matches in the order they
// were loaded; then the target and its options. An option the fake does
// not know is an error, so that no test passes on a spec the fake cannot
// judge.
func canonical(spec []string, v6 bool) ([]string, error) {
	var (
		basic   = map[string][]string{}
		matches [][]string // each: "-m", name, options...
		target  []string
		proto   string
		neg     bool
	)
	bits := 32
	if v6 {
		bits = 128
	}
	addr := func(s string) (string, error) {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is6() == v6 {
			return p.Masked().String(), nil
		}
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() == v6 {
			return netip.PrefixFrom(a, bits).String(), nil
		}
		return "", fmt.Errorf("host/network %q not found", s)
	}
	opt := func(o string) string {
		if neg {
			neg = false
			return "! " + o
		}
		return o
	}
	curMatch := func(name string) *[]string {
		for i := range matches {
			if matches[i][1] == name {
				return &matches[i]
			}
		}
		matches = append(matches, []string{"-m", name})
		return &matches[len(matches)-1]
	}
	for i := 0; i < len(spec); i++ {
		w := spec[i]
		val := func() (string, error) {
			if i+1 >= len(spec) {
				return "", fmt.Errorf("option %q requires an argument", w)
			}
			i++
			return spec[i], nil
		}
		if target != nil {
			switch w {
			case "--to-destination":
				v, err := val()
				if err != nil {
					return nil, err
				}
				ap, err := netip.ParseAddrPort(v)
				if err != nil || ap.Addr().Is6() != v6 {
					return nil, fmt.Errorf("bad --to-destination %q", v)
				}
				target = append(target, w, ap.String())
			default:
				return nil, fmt.Errorf("fake iptables: unknown target option %q", w)
			}
			continue
		}
		switch w {
		case "!":
			neg = true
		case "-s", "--source", "-d", "--destination":
			v, err := val()
			if err != nil {
				return nil, err
			}
			a, err := addr(v)
			if err != nil {
				return nil, err
			}
			short := "-" + string(strings.TrimLeft(w, "-")[0])
			basic[short] = strings.Fields(opt(short) + " " + a)
		case "-i", "--in-interface", "-o", "--out-interface":
			v, err := val()
			if err != nil {
				return nil, err
			}
			short := "-" + string(strings.TrimLeft(w, "-")[0])
			basic[short] = strings.Fields(opt(short) + " " + v)
		case "-p", "--protocol":
			v, err := val()
			if err != nil {
				return nil, err
			}
			proto = strings.ToLower(v)
			basic["-p"] = strings.Fields(opt("-p") + " " + proto)
		case "-m", "--match":
			v, err := val()
			if err != nil {
				return nil, err
			}
			curMatch(v)
		case "--dport", "--sport", "--destination-port", "--source-port":
			v, err := val()
			if err != nil {
				return nil, err
			}
			if proto != "tcp" && proto != "udp" {
				return nil, fmt.Errorf("unknown option %q", w)
			}
			m := curMatch(proto)
			short := "--" + string(strings.TrimLeft(w, "-")[0]) + "port"
			*m = append(*m, strings.Fields(opt(short)+" "+v)...)
		case "--comment":
			v, err := val()
			if err != nil {
				return nil, err
			}
			m := curMatch("comment")
			*m = append(*m, w, v)
		case "-j", "--jump", "-g", "--goto":
			v, err := val()
			if err != nil {
				return nil, err
			}
			target = []string{"-" + string(strings.TrimLeft(w, "-")[0]), v}
		default:
			return nil, fmt.Errorf("fake iptables: unknown option %q", w)
		}
	}
	var out []string
	for _, k := range []string{"-s", "-d", "-i", "-o", "-p"} {
		out = append(out, basic[k]...)
	}
	for _, m := range matches {
		if len(m) == 2 && m[1] != proto {
			return nil, fmt.Errorf("fake iptables: match %q without options", m[1])
		}
		out = append(out, m...)
	}
	return append(out, target...), nil
}

var _ iptablesAPI = (*fakeIPTables)(nil)

// table returns table, instantiating it.
func (x *fakeIPTables) table(name string) *fakeTable {
	t, ok := x.tables[name]
	if !ok {
		t = &fakeTable{chains: slices.Clone(x.builtins(name)), rules: map[string][]string{}}
		x.tables[name] = t
	}
	return t
}

func (t *fakeTable) has(chain string) bool { return slices.Contains(t.chains, chain) }

func notExist(format string, args ...any) error {
	return &fakeIPTError{msg: fmt.Sprintf(format, args...), notExist: true}
}

func (x *fakeIPTables) checkTarget(t *fakeTable, spec []string) error {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == "-j" {
			target := spec[i+1]
			if strings.ToUpper(target) == target && strings.Contains(target, "-") && !t.has(target) {
				return notExist("Couldn't load target `%s':No such file or directory", target)
			}
		}
	}
	return nil
}

func (x *fakeIPTables) NewChain(table, chain string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("NewChain"); err != nil {
		return err
	}
	t := x.table(table)
	if t.has(chain) {
		return &fakeIPTError{msg: "iptables: Chain already exists."}
	}
	t.chains = append(t.chains, chain)
	return nil
}

func (x *fakeIPTables) ClearAndDeleteChain(table, chain string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("ClearAndDeleteChain"); err != nil {
		return err
	}
	return x.clearAndDeleteLocked(table, chain)
}

func (x *fakeIPTables) clearAndDeleteLocked(table, chain string) error {
	t := x.table(table)
	if !t.has(chain) {
		return nil // go-iptables checks ChainExists first
	}
	if slices.Contains(x.builtins(table), chain) {
		return &fakeIPTError{msg: "iptables: cannot delete built-in chain"}
	}
	for c, specs := range t.rules {
		for _, s := range specs {
			if jumpTarget(s) == chain && c != chain {
				return &fakeIPTError{msg: "iptables: Too many links."}
			}
		}
	}
	delete(t.rules, chain)
	t.chains = slices.DeleteFunc(t.chains, func(c string) bool { return c == chain })
	return nil
}

func (x *fakeIPTables) Append(table, chain string, spec ...string) error {
	return x.Insert(table, chain, -1, spec...)
}

func (x *fakeIPTables) Insert(table, chain string, pos int, spec ...string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("Insert"); err != nil {
		return err
	}
	t := x.table(table)
	if !t.has(chain) {
		return notExist("iptables: No chain/target/match by that name.")
	}
	spec, err := x.canonical(spec)
	if err != nil {
		return &fakeIPTError{msg: err.Error()}
	}
	if err := x.checkTarget(t, spec); err != nil {
		return err
	}
	rules := t.rules[chain]
	if pos == -1 {
		pos = len(rules) + 1
	}
	if pos < 1 || pos > len(rules)+1 {
		return &fakeIPTError{msg: "iptables: Index of insertion too big."}
	}
	t.rules[chain] = slices.Insert(rules, pos-1, joinArgs(spec))
	return nil
}

func (x *fakeIPTables) Delete(table, chain string, spec ...string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("Delete"); err != nil {
		return err
	}
	return x.deleteLocked(table, chain, spec)
}

func (x *fakeIPTables) deleteLocked(table, chain string, spec []string) error {
	t := x.table(table)
	if !t.has(chain) {
		return notExist("iptables: No chain/target/match by that name.")
	}
	spec, err := x.canonical(spec)
	if err != nil {
		return &fakeIPTError{msg: err.Error()}
	}
	i := slices.Index(t.rules[chain], joinArgs(spec))
	if i < 0 {
		return notExist("iptables: Bad rule (does a matching rule exist in that chain?).")
	}
	t.rules[chain] = slices.Delete(t.rules[chain], i, i+1)
	return nil
}

// Restore applies iptables-restore --noflush input of -D, -F and -X lines
// (what teardown sends), each table's section as one transaction: on any
// error that table is left as it was. The system hands out arptables fakes
// without it, as the real arptables-restore has no --noflush.
func (x *fakeIPTables) Restore(input string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.restores++
	if err := x.faults.hit("Restore"); err != nil {
		return err
	}
	if x.restoreErr != nil {
		return x.restoreErr
	}
	var table string
	var saved fakeTable
	for _, l := range strings.Split(strings.TrimSpace(input), "\n") {
		op, rest, _ := strings.Cut(l, " ")
		chain, spec, _ := strings.Cut(rest, " ")
		var err error
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
			t := x.table(table)
			saved = fakeTable{chains: slices.Clone(t.chains), rules: map[string][]string{}}
			for c, r := range t.rules {
				saved.rules[c] = slices.Clone(r)
			}
		case l == "COMMIT":
			table = ""
		case table == "":
			err = fmt.Errorf("line %q outside a table", l)
		case op == "-D":
			var args []string
			if args, err = splitArgs(spec); err == nil {
				err = x.deleteLocked(table, chain, args)
			}
		case op == "-F" && spec == "":
			if !x.table(table).has(chain) {
				err = notExist("chain %s does not exist", chain)
			}
			x.table(table).rules[chain] = nil
		case op == "-X" && spec == "":
			if !x.table(table).has(chain) {
				err = notExist("chain %s does not exist", chain)
			} else {
				err = x.clearAndDeleteLocked(table, chain)
			}
		default:
			err = fmt.Errorf("fake restore: unsupported line %q", l)
		}
		if err != nil {
			if table != "" {
				*x.table(table) = saved
			}
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

var _ restorer = (*fakeIPTables)(nil)

func (x *fakeIPTables) DeleteById(table, chain string, id int) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("DeleteById"); err != nil {
		return err
	}
	t := x.table(table)
	if !t.has(chain) || id < 1 || id > len(t.rules[chain]) {
		return notExist("iptables: Index of deletion too big.")
	}
	t.rules[chain] = slices.Delete(t.rules[chain], id-1, id)
	return nil
}

func (x *fakeIPTables) ListTable(table string) ([]string, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("ListTable"); err != nil {
		return nil, err
	}
	t, ok := x.tables[table]
	switch {
	case !ok && x.legacy:
		t = x.table(table) // the kernel instantiates a legacy table on any access
	case !ok:
		t = &fakeTable{chains: x.builtins(table)} // nft lists without creating
	}
	var out []string
	for _, c := range t.chains {
		if slices.Contains(x.builtins(table), c) {
			out = append(out, "-P "+c+" ACCEPT")
		} else {
			out = append(out, "-N "+c)
		}
	}
	for _, c := range t.chains {
		for _, s := range t.rules[c] {
			out = append(out, "-A "+c+" "+s)
		}
	}
	return out, nil
}

func (x *fakeIPTables) TablePresent(table string) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.faults.hit("TablePresent"); err != nil {
		return false, err
	}
	_, ok := x.tables[table]
	return ok || !x.legacy, nil
}

// add installs rules as another program would, panicking on a bad rule.
func (x *fakeIPTables) add(table, chain string, spec ...string) {
	x.mu.Lock()
	t := x.table(table)
	if !t.has(chain) {
		t.chains = append(t.chains, chain)
	}
	x.mu.Unlock()
	if len(spec) > 0 {
		if err := x.Append(table, chain, spec...); err != nil {
			panic(err)
		}
	}
}

// flush empties a chain as `iptables -F` would.
func (x *fakeIPTables) flush(table, chain string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.table(table).rules[chain] = nil
}

// String renders the state: present tables, user chains and rules.
func (x *fakeIPTables) String() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var b strings.Builder
	names := make([]string, 0, len(x.tables))
	for n := range x.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := x.tables[n]
		if len(t.chains) == len(x.builtins(n)) && len(slices.Concat(slices.Collect(maps.Values(t.rules))...)) == 0 {
			continue // like nft, a table once used stays with empty built-in chains: no trace of anyone
		}
		fmt.Fprintf(&b, "*%s\n", n)
		for _, c := range t.chains {
			if !slices.Contains(x.builtins(n), c) {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
		}
		for _, c := range t.chains {
			for _, s := range t.rules[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, s)
			}
		}
	}
	return b.String()
}

// fakeLink is one link as the kernel holds it.
type fakeLink struct {
	index int
	name  string
	typ   string
	alias string
	up    bool
	addrs []netlink.Addr
}

func (l *fakeLink) netlink() netlink.Link {
	attrs := netlink.LinkAttrs{Index: l.index, Name: l.name, Alias: l.alias}
	if l.up {
		attrs.Flags = net.FlagUp
	}
	return &netlink.GenericLink{LinkAttrs: attrs, LinkType: l.typ}
}

// fakeLinks models links and their IPv4 addresses, with the kernel's
// refusals, and sends address events to subscribers.
type fakeLinks struct {
	mu             sync.Mutex
	links          map[string]*fakeLink
	nextIndex      int
	dummySupported bool
	subs           []*fakeSub
	faults         *faults
}

type fakeSub struct {
	mu     sync.Mutex
	ch     chan<- netlink.AddrUpdate
	done   <-chan struct{}
	closed bool
}

var _ linksAPI = (*fakeLinks)(nil)

func newFakeLinks(dummy bool, f *faults) *fakeLinks {
	fl := &fakeLinks{links: map[string]*fakeLink{}, nextIndex: 1, dummySupported: dummy, faults: f}
	fl.addLink("lo", "device", "", true)
	fl.addAddr("lo", "127.0.0.1/8", "lo")
	return fl
}

func (f *fakeLinks) addLink(name, typ, alias string, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links[name] = &fakeLink{index: f.nextIndex, name: name, typ: typ, alias: alias, up: up}
	f.nextIndex++
}

func (f *fakeLinks) addAddr(link, cidr, label string) {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	if err := f.AddrAdd(f.links[link].netlink(), &netlink.Addr{IPNet: n, Label: label}); err != nil {
		panic(err)
	}
}

func (f *fakeLinks) lookup(l netlink.Link) (*fakeLink, error) {
	fl, ok := f.links[l.Attrs().Name]
	if !ok || fl.index != l.Attrs().Index {
		return nil, unix.ENODEV
	}
	return fl, nil
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults.hit("LinkByName"); err != nil {
		return nil, err
	}
	l, ok := f.links[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", errLinkNotFound, name)
	}
	return l.netlink(), nil
}

func (f *fakeLinks) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults.hit("LinkList"); err != nil {
		return nil, err
	}
	var out []netlink.Link
	for _, l := range f.links {
		out = append(out, l.netlink())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Attrs().Index < out[j].Attrs().Index })
	return out, nil
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults.hit("LinkAdd"); err != nil {
		return err
	}
	if l.Type() == "dummy" && !f.dummySupported {
		return unix.EOPNOTSUPP
	}
	if _, ok := f.links[l.Attrs().Name]; ok {
		return unix.EEXIST
	}
	f.links[l.Attrs().Name] = &fakeLink{index: f.nextIndex, name: l.Attrs().Name, typ: l.Type(), alias: l.Attrs().Alias}
	f.nextIndex++
	return nil
}

func (f *fakeLinks) LinkDel(l netlink.Link) error {
	f.mu.Lock()
	if err := f.faults.hit("LinkDel"); err != nil {
		f.mu.Unlock()
		return err
	}
	fl, err := f.lookup(l)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	delete(f.links, fl.name)
	var events []netlink.AddrUpdate
	for _, a := range fl.addrs {
		events = append(events, netlink.AddrUpdate{LinkAddress: *a.IPNet, LinkIndex: fl.index, NewAddr: false})
	}
	f.mu.Unlock()
	f.emit(events)
	return nil
}

func (f *fakeLinks) LinkSetUp(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults.hit("LinkSetUp"); err != nil {
		return err
	}
	fl, err := f.lookup(l)
	if err != nil {
		return err
	}
	fl.up = true
	return nil
}

func (f *fakeLinks) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.faults.hit("AddrList"); err != nil {
		return nil, err
	}
	fl, err := f.lookup(l)
	if err != nil {
		return nil, err
	}
	var out []netlink.Addr
	for _, a := range fl.addrs {
		if is4 := a.IP.To4() != nil; family == netlink.FAMILY_ALL || is4 == (family == netlink.FAMILY_V4) {
			out = append(out, a)
		}
	}
	return out, nil
}

func (f *fakeLinks) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	if err := f.faults.hit("AddrAdd"); err != nil {
		f.mu.Unlock()
		return err
	}
	fl, err := f.lookup(l)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	if a.Label != "" && !strings.HasPrefix(a.Label, fl.name) {
		f.mu.Unlock()
		return errors.New("label must begin with interface name")
	}
	if len(a.Label) > maxIfNameLen {
		f.mu.Unlock()
		return unix.EINVAL
	}
	for _, have := range fl.addrs {
		if prefixOf(have) == prefixOf(*a) {
			f.mu.Unlock()
			return unix.EEXIST
		}
	}
	na := *a
	na.IPNet = &net.IPNet{IP: slices.Clone(a.IP), Mask: slices.Clone(a.Mask)}
	if na.Label == "" && a.IP.To4() != nil {
		na.Label = fl.name
	}
	na.LinkIndex = fl.index
	fl.addrs = append(fl.addrs, na)
	f.mu.Unlock()
	f.emit([]netlink.AddrUpdate{{LinkAddress: *na.IPNet, LinkIndex: fl.index, NewAddr: true}})
	return nil
}

func (f *fakeLinks) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	if err := f.faults.hit("AddrDel"); err != nil {
		f.mu.Unlock()
		return err
	}
	fl, err := f.lookup(l)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	i := slices.IndexFunc(fl.addrs, func(h netlink.Addr) bool { return prefixOf(h) == prefixOf(*a) })
	if i < 0 {
		f.mu.Unlock()
		return unix.EADDRNOTAVAIL
	}
	gone := fl.addrs[i]
	fl.addrs = slices.Delete(fl.addrs, i, i+1)
	f.mu.Unlock()
	f.emit([]netlink.AddrUpdate{{LinkAddress: *gone.IPNet, LinkIndex: fl.index, NewAddr: false}})
	return nil
}

func (f *fakeLinks) AddrSubscribe(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onError func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSub{ch: ch, done: done}
	f.subs = append(f.subs, s)
	go func() {
		<-done
		s.mu.Lock()
		s.closed = true
		close(ch)
		s.mu.Unlock()
	}()
	return nil
}

// emit delivers events to subscribers, outside f.mu as the kernel would.
func (f *fakeLinks) emit(events []netlink.AddrUpdate) {
	f.mu.Lock()
	subs := slices.Clone(f.subs)
	f.mu.Unlock()
	for _, s := range subs {
		s.mu.Lock()
		for _, e := range events {
			if s.closed {
				break
			}
			select {
			case s.ch <- e:
			case <-s.done:
			}
		}
		s.mu.Unlock()
	}
}

// delAddr removes an address as another program would.
func (f *fakeLinks) delAddr(link, cidr string) {
	ip, n, _ := net.ParseCIDR(cidr)
	n.IP = ip
	f.mu.Lock()
	l := f.links[link].netlink()
	f.mu.Unlock()
	if err := f.AddrDel(l, &netlink.Addr{IPNet: n}); err != nil {
		panic(err)
	}
}

// String renders links (by index) with alias, state and addresses.
func (f *fakeLinks) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ls := make([]*fakeLink, 0, len(f.links))
	for _, l := range f.links {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].index < ls[j].index })
	var b strings.Builder
	for _, l := range ls {
		state := "down"
		if l.up {
			state = "up"
		}
		fmt.Fprintf(&b, "link %s type %s alias %q %s\n", l.name, l.typ, l.alias, state)
		// As the kernel lists them: IPv4, then IPv6.
		for _, a := range l.addrs {
			if a.IP.To4() != nil {
				fmt.Fprintf(&b, "  inet %s scope %d label %s\n", prefixOf(a), a.Scope, a.Label)
			}
		}
		for _, a := range l.addrs {
			if a.IP.To4() == nil {
				fmt.Fprintf(&b, "  inet6 %s flags %#x\n", prefixOf(a), a.Flags)
			}
		}
	}
	return b.String()
}

// fakeHost bundles the fakes into a system.
type fakeHost struct {
	faults      *faults
	links       *fakeLinks
	ipt         map[string]*fakeIPTables // by backend; a missing key is "not installed"
	ipt6        map[string]*fakeIPTables // ip6tables, by backend
	arp         map[string]*fakeIPTables // arptables, by backend
	ipv6        error                    // why IPv6 is unusable; nil: usable
	alternative string
	tick        chan time.Time
	// ruleChanges, when not nil, is the host's nf_tables change events:
	// true is a committed change, false ends the subscription as a failed
	// receive does. nftSubscribed counts subscriptions.
	ruleChanges   chan bool
	nftSubscribed atomic.Int32
}

func newFakeHost(dummy bool, backends ...string) *fakeHost {
	f := &faults{}
	h := &fakeHost{faults: f, links: newFakeLinks(dummy, f), ipt: map[string]*fakeIPTables{},
		ipt6: map[string]*fakeIPTables{}, arp: map[string]*fakeIPTables{}, alternative: BackendNFT, tick: make(chan time.Time)}
	for _, b := range backends {
		h.ipt[b] = newFakeIPTables(b == BackendLegacy, false, f)
		h.ipt6[b] = newFakeIPTables(b == BackendLegacy, true, f)
	}
	// arptables-nft only, as Debian ships it by default.
	if slices.Contains(backends, BackendNFT) {
		h.arp[BackendNFT] = newFakeIPTables(false, false, f)
		h.arp[BackendNFT].arp = true
	}
	return h
}

func (h *fakeHost) system() system {
	return system{
		links: h.links,
		iptables: func(b string, v6 bool) (iptablesAPI, error) {
			m := h.ipt
			if v6 {
				m = h.ipt6
			}
			if x, ok := m[b]; ok {
				return x, nil
			}
			return nil, fmt.Errorf("finding iptables-%s: %w", b, errNoBackend)
		},
		mode: func() (string, error) { return h.alternative, nil },
		ipv6: func(string) error { return h.ipv6 },
		arp: func(b string) (iptablesAPI, error) {
			if x, ok := h.arp[b]; ok {
				return struct{ iptablesAPI }{x}, nil // no Restore, as arptables has no --noflush
			}
			return nil, fmt.Errorf("finding arptables-%s: %w", b, errNoBackend)
		},
		ticker:    func(time.Duration) (<-chan time.Time, func()) { return h.tick, func() {} },
		nftEvents: h.nftEvents(),
	}
}

func (h *fakeHost) nftEvents() func(chan<- struct{}, <-chan struct{}, func(error)) error {
	if h.ruleChanges == nil {
		return nil
	}
	return func(ch chan<- struct{}, done <-chan struct{}, onError func(error)) error {
		h.nftSubscribed.Add(1)
		go func() {
			defer close(ch)
			for {
				select {
				case <-done:
					return
				case ok := <-h.ruleChanges:
					select {
					case ch <- struct{}{}:
					default:
					}
					if !ok {
						onError(errors.New("fake receive failed"))
						return
					}
				}
			}
		}()
		return nil
	}
}

// String is the whole host state as text.
func (h *fakeHost) String() string {
	var b strings.Builder
	b.WriteString(h.links.String())
	for _, name := range []string{BackendNFT, BackendLegacy} {
		if x, ok := h.ipt[name]; ok {
			fmt.Fprintf(&b, "# %s\n%s", name, x)
		}
		if x, ok := h.ipt6[name]; ok && x.String() != "" {
			fmt.Fprintf(&b, "# %s ip6\n%s", name, x)
		}
		if x, ok := h.arp[name]; ok && x.String() != "" {
			fmt.Fprintf(&b, "# %s arp\n%s", name, x)
		}
	}
	return b.String()
}

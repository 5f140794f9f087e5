package netredirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Observer is told about every repair Run makes, for metrics.
type Observer interface {
	// Repaired is called once per repaired object, e.g. "nat/OUTPUT jump"
	// or "address 169.254.169.254/32 on lo".
	Repaired(what string)
}

// NopObserver ignores repairs.
type NopObserver struct{}

// Repaired does nothing.
func (NopObserver) Repaired(string) {}

// Options are the Redirector's collaborators.
type Options struct {
	Logger   *slog.Logger // nil discards
	Observer Observer     // nil ignores repairs
}

// system is the seam between the package and the host's kernel.
type system struct {
	links    linksAPI
	iptables func(backend string, v6 bool) (iptablesAPI, error) // wraps errNoBackend when not installed
	mode     func() (string, error)                             // backend of the `iptables` alternative
	ipv6     func(link string) error                            // nil when IPv6 can carry the endpoint on link
	arp      func(backend string) (iptablesAPI, error)          // arptables; wraps errNoBackend when not installed
	ticker   func(time.Duration) (<-chan time.Time, func())
	// nftEvents, when not nil, reports nf_tables ruleset changes (see
	// subscribeNFT).
	nftEvents func(ch chan<- struct{}, done <-chan struct{}, onError func(error)) error
}

func hostSystem() system {
	// Opening a backend runs `iptables --version`; do it once per backend.
	var (
		mu     sync.Mutex
		opened = map[string]iptablesAPI{}
	)
	open := func(backend string, v6 bool) (iptablesAPI, error) {
		mu.Lock()
		defer mu.Unlock()
		key := fmt.Sprint(backend, v6)
		if ipt, ok := opened[key]; ok {
			return ipt, nil
		}
		ipt, err := openIPTables(backend, v6)
		if err == nil {
			opened[key] = ipt
		}
		return ipt, err
	}
	return system{
		links:    netlinkLinks{h: &netlink.Handle{}},
		iptables: open,
		mode:     iptablesMode,
		ipv6:     ipv6Usable,
		arp:      openARPTables,
		ticker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		nftEvents: subscribeNFT,
	}
}

// Redirector installs, keeps and removes the address and rules of one Config.
// Its methods may be called from several goroutines.
type Redirector struct {
	cfg Config
	log *slog.Logger
	obs Observer
	sys system

	mu       sync.Mutex
	resolved bool // backend and link chosen by a successful Setup
	active   bool // Setup succeeded and Teardown has not run: Run repairs
	backend  string
	ipt      iptablesAPI
	ipt6     iptablesAPI // nil unless IPv6 is active
	arpt     iptablesAPI // nil when arptables is not installed
	arpBE    string      // the arptables backend in use
	link     linkPlan
	// changes is what the last Setup changed on the host; empty when it
	// found everything in place.
	changes []string
}

// New validates cfg (zero fields take their defaults) and returns a
// Redirector. It touches nothing on the host.
func New(cfg Config, opts Options) (*Redirector, error) {
	return newRedirector(cfg, opts, hostSystem())
}

func newRedirector(cfg Config, opts Options, sys system) (*Redirector, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating network config: %w", err)
	}
	r := &Redirector{cfg: cfg, log: opts.Logger, obs: opts.Observer, sys: sys}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.obs == nil {
		r.obs = NopObserver{}
	}
	return r, nil
}

// Config returns the configuration with defaults applied.
func (r *Redirector) Config() Config { return r.cfg }

// Setup claims the address and installs the rules, converging whatever is
// already there (a leftover of a crash, a stale target after a config
// change) to exactly the plan; a second call changes nothing. If it fails
// half-way it removes what it added before returning.
func (r *Redirector) Setup(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("setting up redirect: %w", err)
	}
	backend, ipt, err := r.chooseBackend()
	if err != nil {
		return fmt.Errorf("setting up redirect: %w", err)
	}
	j := &journal{}
	lp, changes, err := resolveLink(r.sys.links, r.cfg, true, j)
	var ipt6 iptablesAPI
	if err == nil {
		ipt6, err = r.chooseIPv6(backend, lp)
	}
	arpBE, arpt := r.chooseARP(backend)
	if err == nil {
		var more []string
		more, err = r.ensure(ctx, ipt, ipt6, arpt, lp, j)
		changes = append(changes, more...)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("setting up redirect: %w", err), j.rollback())
	}
	r.resolved, r.active, r.backend, r.ipt, r.ipt6, r.link = true, true, backend, ipt, ipt6, lp
	r.arpt, r.arpBE = arpt, arpBE
	if a := r.foreignAddr(); a != "" {
		r.log.Warn("address already present without the imds-shim label; it is used and will be left in place",
			"addr", r.cfg.prefix(), "link", lp.name, "label", a)
	}
	if ipt6 == nil {
		changes = append(changes, r.removeIPv6()...)
	}
	r.changes = changes
	removed := r.purgeOtherBackend()
	r.log.Info("redirect set up", "addr", r.cfg.prefix(), "port", r.cfg.Port, "target", r.cfg.Target,
		"ipv6", ipt6 != nil, "containers", r.cfg.Containers, "listeners", r.cfg.Listeners(ipt6 != nil),
		"link", lp.String(), "backend", backend, "changed", changes, "purged_other_backend", removed,
		"duration", time.Since(start))
	return nil
}

// chooseARP opens arptables, preferring the backend of iptables; without
// arptables the host keeps answering ARP for the address on its other links
// (the INPUT fence still drops what follows), which is said once.
func (r *Redirector) chooseARP(backend string) (string, iptablesAPI) {
	if r.resolved {
		return r.arpBE, r.arpt
	}
	for _, b := range []string{backend, otherBackend(backend)} {
		if a, err := r.sys.arp(b); err == nil {
			return b, a
		}
	}
	r.log.Warn("arptables is not installed: this host answers ARP for the endpoint address on every link; "+
		"neighbours cannot connect (the INPUT fence drops it) but may send it their own metadata requests", "addr", r.cfg.Addr)
	return "", nil
}

func otherBackend(b string) string {
	if b == BackendLegacy {
		return BackendNFT
	}
	return BackendLegacy
}

// chooseIPv6 opens ip6tables of backend when IPv6 is to be used on lp, or
// returns nil: with "auto" when the host has no usable IPv6 (said once, at
// info level), always with "false". With "true" no IPv6 is an error.
func (r *Redirector) chooseIPv6(backend string, lp linkPlan) (iptablesAPI, error) {
	if r.resolved {
		return r.ipt6, nil
	}
	if r.cfg.IPv6 == IPv6False {
		return nil, nil
	}
	err := r.sys.ipv6(lp.name)
	var ipt6 iptablesAPI
	if err == nil {
		ipt6, err = r.sys.iptables(backend, true)
	}
	switch {
	case err == nil:
		return ipt6, nil
	case r.cfg.IPv6 == IPv6True:
		return nil, fmt.Errorf("ipv6 is true but the endpoint [%s] cannot be set up: %w", addr6, err)
	}
	r.log.Info("not answering at the IPv6 endpoint: IPv6 is not available (ipv6: auto)", "addr", addr6, "reason", err)
	return nil, nil
}

// removeIPv6 removes IPv6 leftovers of ours (rules, the address on our
// link) when IPv6 is not in use, e.g. after a reload to ipv6 false. It is
// best effort: without IPv6 in the kernel there can be none.
func (r *Redirector) removeIPv6() []string {
	var removed []string
	if ipt6, err := r.sys.iptables(r.backend, true); err == nil {
		for _, t := range slices.Backward(tables) {
			rm, err := removeOwned(ipt6, t)
			removed = append(removed, rm...)
			if err != nil {
				r.log.Debug("removing IPv6 rules of ours", "err", err)
			}
		}
	}
	if l, err := r.sys.links.LinkByName(r.link.name); err == nil {
		rm, err := delOwnedAddrs6(r.sys.links, l, r.cfg.prefix6())
		removed = append(removed, rm...)
		if err != nil {
			r.log.Debug("removing the IPv6 address of ours", "err", err)
		}
	}
	return removed
}

// Listeners returns the addresses the daemon must listen on: the Target,
// and IPv6Target(Target) when IPv6 is in use. Before Setup has decided
// ("auto"), IPv6 counts as in use only with "true".
func (r *Redirector) Listeners() []netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resolved {
		return r.cfg.Listeners(r.ipt6 != nil)
	}
	return r.cfg.Listeners(r.cfg.IPv6 == IPv6True)
}

// IPv6Active reports whether the last successful Setup set up the IPv6
// endpoint.
func (r *Redirector) IPv6Active() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resolved && r.ipt6 != nil
}

// ensure converges the addresses and the rules of both tables, for IPv4
// and, when ipt6 is not nil, IPv6.
func (r *Redirector) ensure(ctx context.Context, ipt, ipt6, arpt iptablesAPI, lp linkPlan, j *journal) ([]string, error) {
	changes, err := ensureAddr(r.sys.links, lp, r.cfg.prefix(), j)
	if err != nil {
		return changes, err
	}
	if ipt6 != nil {
		c, err := ensureAddr6(r.sys.links, lp, r.cfg.prefix6(), j)
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	plan := Plan(r.cfg)
	for _, fam := range []struct {
		ipt iptablesAPI
		v6  bool
	}{{ipt, false}, {ipt6, true}} {
		if fam.ipt == nil {
			continue
		}
		for _, t := range tables {
			if err := ctx.Err(); err != nil {
				return changes, err
			}
			c, err := ensureTable(fam.ipt, t, rulesOf(plan, fam.v6), j)
			changes = append(changes, prefixAll(fam.v6, c)...)
			if err != nil {
				return changes, err
			}
		}
	}
	if arpt != nil {
		for _, t := range arpTables {
			c, err := ensureTable(arpt, t, arpRules(plan), j)
			for _, x := range c {
				changes = append(changes, "arp "+x)
			}
			if err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

// prefixAll marks the changes of an IPv6 table as such.
func prefixAll(v6 bool, changes []string) []string {
	if !v6 {
		return changes
	}
	out := make([]string, len(changes))
	for i, c := range changes {
		out[i] = "ip6 " + c
	}
	return out
}

// foreignAddr returns the label of our address if someone else put it on
// the link (without our label), else "".
func (r *Redirector) foreignAddr() string {
	l, err := r.sys.links.LinkByName(r.link.name)
	if err != nil {
		return ""
	}
	a, err := findAddr(r.sys.links, l, r.cfg.prefix())
	if err != nil || a == nil || a.Label == label(r.link.name) {
		return ""
	}
	return a.Label + " " // never empty, even for an empty label
}

// purgeOtherBackend removes our leftovers from the backend not in use: they
// would still rewrite packets. Failing here does not fail Setup.
func (r *Redirector) purgeOtherBackend() []string {
	other := BackendLegacy
	if r.backend == BackendLegacy {
		other = BackendNFT
	}
	var removed []string
	for _, v6 := range []bool{false, true} {
		ipt, err := r.sys.iptables(other, v6)
		if err != nil {
			continue
		}
		for _, t := range slices.Backward(tables) {
			rm, err := removeOwned(ipt, t)
			removed = append(removed, prefixAll(v6, rm)...)
			if err != nil && (!v6 || r.ipt6 != nil) {
				r.log.Warn("removing leftovers from the other iptables backend", "backend", other, "ipv6", v6, "err", err)
			}
		}
	}
	if r.arpt != nil {
		if a, err := r.sys.arp(otherBackend(r.arpBE)); err == nil {
			rm, err := removeOwned(a, "filter")
			for _, x := range rm {
				removed = append(removed, "arp "+x)
			}
			if err != nil {
				r.log.Warn("removing leftovers from the other arptables backend", "err", err)
			}
		}
	}
	return removed
}

// chooseBackend opens the configured backend, or detects the host's.
func (r *Redirector) chooseBackend() (string, iptablesAPI, error) {
	if r.resolved {
		return r.backend, r.ipt, nil
	}
	if r.cfg.Backend != BackendAuto {
		ipt, err := r.sys.iptables(r.cfg.Backend, false)
		if err != nil {
			return "", nil, fmt.Errorf("opening iptables backend %s: %w", r.cfg.Backend, err)
		}
		return r.cfg.Backend, ipt, nil
	}
	return detectBackend(r.sys, r.log)
}

// detectBackend picks the backend the host uses (see the package doc).
func detectBackend(sys system, log *slog.Logger) (string, iptablesAPI, error) {
	counts := map[string]int{}
	apis := map[string]iptablesAPI{}
	for _, b := range []string{BackendNFT, BackendLegacy} {
		ipt, err := sys.iptables(b, false)
		if errors.Is(err, errNoBackend) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("opening iptables backend %s: %w", b, err)
		}
		n := 0
		for _, t := range detectTables {
			c, err := countForeign(ipt, t)
			if err != nil {
				return "", nil, fmt.Errorf("counting rules of backend %s: %w", b, err)
			}
			n += c
		}
		counts[b], apis[b] = n, ipt
	}
	mode, err := sys.mode()
	if err != nil {
		log.Debug("iptables alternative unknown", "err", err)
	}
	b := pickBackend(counts, mode)
	if b == "" {
		return "", nil, fmt.Errorf("detecting iptables backend: neither iptables-nft nor iptables-legacy is installed: %w", errNoBackend)
	}
	log.Info("iptables backend detected", "backend", b, "nft_rules", counts[BackendNFT], "legacy_rules", counts[BackendLegacy], "alternative", mode)
	return b, apis[b], nil
}

// pickBackend chooses among the installed backends (the keys of counts,
// valued by how many rules other than ours each holds): the one other
// software already uses, else the `iptables` alternative's mode, else nft.
func pickBackend(counts map[string]int, alternative string) string {
	nft, hasNFT := counts[BackendNFT]
	legacy, hasLegacy := counts[BackendLegacy]
	switch {
	case !hasNFT && !hasLegacy:
		return ""
	case !hasLegacy:
		return BackendNFT
	case !hasNFT:
		return BackendLegacy
	case legacy > nft:
		return BackendLegacy
	case nft > legacy:
		return BackendNFT
	case alternative == BackendLegacy:
		return BackendLegacy
	}
	return BackendNFT
}

// Teardown removes what this Redirector's configuration owns, in the
// reverse order of Setup: the jumps and owned chains (filter, then nat),
// the labelled address, then the dummy link if imds-shim created it. It
// continues past failures, so one stuck rule cannot leak the address, and
// returns them joined. Nothing set up means nothing to do; a second call
// finds nothing and succeeds.
func (r *Redirector) Teardown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active = false
	if !r.resolved {
		return nil
	}
	start := time.Now()
	var (
		removed []string
		errs    []error
	)
	ipt6 := r.ipt6
	if ipt6 == nil { // IPv6 not in use: remove whatever an earlier run left, if anything can
		ipt6, _ = r.sys.iptables(r.backend, true)
	}
	for _, fam := range []struct {
		ipt iptablesAPI
		v6  bool
	}{{ipt6, true}, {r.ipt, false}} {
		if fam.ipt == nil {
			continue
		}
		for _, t := range slices.Backward(tables) {
			rm, err := removeOwned(fam.ipt, t)
			removed = append(removed, prefixAll(fam.v6, rm)...)
			if fam.v6 && r.ipt6 == nil && err != nil {
				r.log.Debug("removing IPv6 rules of ours", "err", err)
				continue
			}
			errs = append(errs, err)
		}
	}
	if r.arpt != nil {
		rm, err := removeOwned(r.arpt, "filter")
		for _, x := range rm {
			removed = append(removed, "arp "+x)
		}
		errs = append(errs, err)
	}
	if l, err := r.sys.links.LinkByName(r.link.name); err == nil {
		rm, err := delOwnedAddrs6(r.sys.links, l, r.cfg.prefix6())
		removed = append(removed, rm...)
		errs = append(errs, err)
		rm, err = delOwnedAddrs(r.sys.links, l)
		removed = append(removed, rm...)
		errs = append(errs, err)
	} else if !errors.Is(err, errLinkNotFound) {
		errs = append(errs, fmt.Errorf("looking up link %s: %w", r.link.name, err))
	}
	if r.link.dummy {
		errs = append(errs, removeDummy(r.sys.links, r.link.name))
	}
	err := errors.Join(errs...)
	r.log.Info("redirect removed", "backend", r.backend, "link", r.link.String(), "removed", removed,
		"duration", time.Since(start), "err", err)
	if err != nil {
		return fmt.Errorf("tearing down redirect: %w", err)
	}
	return nil
}

// Run keeps the redirect in place until ctx is done, then returns nil: it
// re-runs the convergence of Setup when the address is removed (netlink
// address subscription), when an nf_tables ruleset changes (with the nft
// backend: a firewalld reload, an `iptables-nft -F`, `nft flush ruleset`),
// and every ReconcileInterval (which is all the legacy backend has: its
// rules have no change events), logging each repair and reporting it to the
// Observer. A failed repair is logged and retried on the next tick. Run
// requires a successful Setup and stops repairing once Teardown has run.
//
// A ruleset change is acted on ruleSettle after it, so that the burst of
// transactions of one reload is one check, and at most once per ruleGap,
// so that a host whose rules change all the time (kube-proxy, Docker) does
// not keep the daemon running iptables; our own repairs are changes too, and
// the check they cause finds nothing to do.
func (r *Redirector) Run(ctx context.Context) error {
	r.mu.Lock()
	active, watchRules := r.active, r.sys.nftEvents != nil && (r.backend == BackendNFT || r.arpBE == BackendNFT)
	r.mu.Unlock()
	if !active {
		return errors.New("running redirect: Setup has not succeeded")
	}
	tick, stop := r.sys.ticker(r.cfg.ReconcileInterval)
	defer stop()
	var sub *subscription[netlink.AddrUpdate]
	defer func() { sub.close() }()
	var rules *subscription[struct{}]
	defer func() { rules.close() }()
	retryRules := watchRules
	var settle <-chan time.Time // a ruleset change waiting to be checked
	var lastRules time.Time     // the last check a ruleset change caused
	for {
		subscribed := false
		if sub == nil {
			sub = r.subscribe()
			subscribed = true
		}
		if retryRules && rules == nil {
			rules = r.watchRules()
			retryRules, subscribed = false, true
		}
		if subscribed {
			// Anything removed while unsubscribed is caught here.
			r.reconcile(ctx, "subscribed")
		}
		var events <-chan netlink.AddrUpdate
		if sub != nil {
			events = sub.ch
		}
		var changed <-chan struct{}
		if rules != nil {
			changed = rules.ch
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			retryRules = watchRules
			r.reconcile(ctx, "periodic")
		case u, ok := <-events:
			if !ok {
				r.log.Warn("address subscription ended; relying on periodic checks until it is renewed")
				sub.close()
				sub = nil
				continue
			}
			if !u.NewAddr && (u.LinkAddress.IP.Equal(r.cfg.Addr.AsSlice()) || u.LinkAddress.IP.Equal(addr6.AsSlice())) {
				r.reconcile(ctx, "address removed")
			}
		case _, ok := <-changed:
			if !ok {
				r.log.Warn("rule change subscription ended; relying on periodic checks until it is renewed")
				rules.close()
				rules, retryRules = nil, false  // until the next tick
				settle = time.After(ruleSettle) // changes may have been missed
				continue
			}
			if settle == nil {
				settle = time.After(max(ruleSettle, time.Until(lastRules.Add(ruleGap))))
			}
		case <-settle:
			settle, lastRules = nil, time.Now()
			r.reconcile(ctx, "rules changed")
		}
	}
}

// How soon after a ruleset change Run checks, and how often at most.
const (
	ruleSettle = 100 * time.Millisecond
	ruleGap    = time.Second
)

// subscription is a live netlink subscription: address changes, or
// nf_tables ruleset changes.
type subscription[T any] struct {
	ch   chan T
	done chan struct{}
}

func newSubscription[T any](buffer int) *subscription[T] {
	return &subscription[T]{ch: make(chan T, buffer), done: make(chan struct{})}
}

// close stops the subscription and drains it, so its reader goroutine,
// which may be blocked sending, can exit.
func (s *subscription[T]) close() {
	if s == nil {
		return
	}
	close(s.done)
	for range s.ch {
	}
}

func (r *Redirector) subscribe() *subscription[netlink.AddrUpdate] {
	s := newSubscription[netlink.AddrUpdate](64)
	err := r.sys.links.AddrSubscribe(s.ch, s.done, func(err error) {
		select {
		case <-s.done: // closing the socket on purpose makes the reader fail
		default:
			r.log.Warn("address subscription", "err", err)
		}
	})
	if err != nil {
		r.log.Warn("subscribing to address changes; relying on periodic checks", "err", err)
		return nil
	}
	return s
}

// watchRules subscribes to ruleset changes; one pending wake-up is enough.
func (r *Redirector) watchRules() *subscription[struct{}] {
	s := newSubscription[struct{}](1)
	err := r.sys.nftEvents(s.ch, s.done, func(err error) {
		r.log.Warn("rule change subscription", "err", err)
	})
	if err != nil {
		r.log.Warn("subscribing to nftables rule changes; relying on periodic checks", "err", err)
		return nil
	}
	return s
}

// reconcile converges everything once, reporting repairs.
func (r *Redirector) reconcile(ctx context.Context, why string) {
	r.mu.Lock()
	if !r.active {
		r.mu.Unlock()
		return
	}
	changes, err := r.ensure(ctx, r.ipt, r.ipt6, r.arpt, r.link, nil)
	r.mu.Unlock()
	for _, c := range changes {
		r.log.Warn("repaired", "what", c, "trigger", why)
		r.obs.Repaired(c)
	}
	if err != nil && ctx.Err() == nil {
		r.log.Error("repairing redirect", "trigger", why, "err", err)
	}
}

// Status is what is actually installed, compared with the plan.
type Status struct {
	Backend     string       // the iptables backend inspected
	Link        string       // the link that carries (or would carry) the address
	LinkPresent bool         //
	LinkUp      bool         //
	Addr        netip.Prefix // the planned address
	AddrPresent bool         // Addr is on Link
	AddrOwned   bool         // and carries the imds-shim label
	// IPv6 says whether the IPv6 endpoint is in use (set up, or with a
	// fresh Redirector: would be); IPv6Note says why not, when it is not.
	IPv6         bool
	IPv6Note     string
	Addr6        netip.Prefix     // fd00:ec2::254/128
	Addr6Present bool             // Addr6 is on Link (only meaningful with IPv6)
	ARP          bool             // arptables is installed: the host does not answer ARP for Addr
	Containers   []string         // bridges whose containers are redirected
	Listeners    []netip.AddrPort // what the daemon listens on
	Rules        []RuleStatus     // the planned rules, IPv6 ones only with IPv6
	Stale        []string         // rules and chains of ours that are not planned
	Leftovers    []string         // our rules and chains in the other backend
}

// RuleStatus is one planned rule and whether it is installed.
type RuleStatus struct {
	Rule    Rule
	Present bool
}

// OK reports whether everything planned is installed and nothing else of
// ours is.
func (s Status) OK() bool {
	if !s.LinkPresent || !s.LinkUp || !s.AddrPresent || (s.IPv6 && !s.Addr6Present) || len(s.Stale) > 0 || len(s.Leftovers) > 0 {
		return false
	}
	for _, r := range s.Rules {
		if !r.Present {
			return false
		}
	}
	return true
}

// String renders s for `imds-shim status`.
func (s Status) String() string {
	var b strings.Builder
	yes := func(ok bool) string {
		if ok {
			return "ok     "
		}
		return "MISSING"
	}
	fmt.Fprintf(&b, "backend: iptables-%s\n", s.Backend)
	fmt.Fprintf(&b, "%s link %s", yes(s.LinkPresent && s.LinkUp), s.Link)
	if s.LinkPresent && !s.LinkUp {
		fmt.Fprintf(&b, " (down)")
	}
	fmt.Fprintf(&b, "\n%s address %s on %s", yes(s.AddrPresent), s.Addr, s.Link)
	if s.AddrPresent && !s.AddrOwned {
		fmt.Fprintf(&b, " (not labelled %s: someone else's)", label(s.Link))
	}
	fmt.Fprintln(&b)
	if s.IPv6 {
		fmt.Fprintf(&b, "%s address %s on %s\n", yes(s.Addr6Present), s.Addr6, s.Link)
	} else {
		fmt.Fprintf(&b, "ipv6:   off (%s)\n", s.IPv6Note)
	}
	if len(s.Containers) > 0 {
		fmt.Fprintf(&b, "containers: %s\n", strings.Join(s.Containers, ", "))
	} else {
		fmt.Fprintf(&b, "containers: none (host processes only)\n")
	}
	ls := make([]string, len(s.Listeners))
	for i, l := range s.Listeners {
		ls[i] = l.String()
	}
	fmt.Fprintf(&b, "listeners: %s\n", strings.Join(ls, ", "))
	if !s.ARP {
		fmt.Fprintf(&b, "WARNING arptables is not installed: this host answers ARP for %s on every link\n", s.Addr.Addr())
	}
	for _, r := range s.Rules {
		table := r.Rule.Table
		switch {
		case r.Rule.ARP:
			table = "arp " + table
		case r.Rule.IPv6:
			table = "ip6 " + table
		}
		fmt.Fprintf(&b, "%s %s: %s\n", yes(r.Present), table, r.Rule)
	}
	for _, x := range s.Stale {
		fmt.Fprintf(&b, "STALE   %s\n", x)
	}
	for _, x := range s.Leftovers {
		fmt.Fprintf(&b, "LEFTOVER %s\n", x)
	}
	return b.String()
}

// Status inspects the host without changing it. Before Setup (as in a
// separate `imds-shim status` process) it resolves the backend and link the
// way Setup would, without creating anything.
func (r *Redirector) Status(ctx context.Context) (Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return Status{}, fmt.Errorf("reading redirect status: %w", err)
	}
	backend, ipt, err := r.chooseBackend()
	if err != nil {
		return Status{}, fmt.Errorf("reading redirect status: %w", err)
	}
	lp := r.link
	if !r.resolved {
		if lp, _, err = resolveLink(r.sys.links, r.cfg, false, nil); err != nil {
			return Status{}, fmt.Errorf("reading redirect status: %w", err)
		}
	}
	ipt6, note := r.ipt6, ""
	if !r.resolved && r.cfg.IPv6 != IPv6False {
		err := r.sys.ipv6(lp.name)
		if err == nil {
			ipt6, err = r.sys.iptables(backend, true)
		}
		if err != nil {
			note = err.Error()
		}
	}
	switch {
	case r.cfg.IPv6 == IPv6False:
		note = "ipv6: false"
	case ipt6 == nil && note == "":
		note = "IPv6 not available when set up (ipv6: auto)"
	}
	s := Status{Backend: backend, Link: lp.name, Addr: r.cfg.prefix(), IPv6: ipt6 != nil, IPv6Note: note,
		Addr6: r.cfg.prefix6(), Containers: slices.Clone(r.cfg.Containers), Listeners: r.cfg.Listeners(ipt6 != nil)}
	if l, err := r.sys.links.LinkByName(lp.name); err == nil {
		s.LinkPresent = !lp.dummy || isOurDummy(l)
		s.LinkUp = l.Attrs().Flags&net.FlagUp != 0
		a, err := findAddr(r.sys.links, l, s.Addr)
		if err != nil {
			return Status{}, fmt.Errorf("reading redirect status: %w", err)
		}
		s.AddrPresent, s.AddrOwned = a != nil, a != nil && a.Label == label(lp.name)
		if s.IPv6 {
			a, err := findAddr(r.sys.links, l, s.Addr6)
			if err != nil {
				return Status{}, fmt.Errorf("reading redirect status: %w", err)
			}
			s.Addr6Present = a != nil
		}
	} else if !errors.Is(err, errLinkNotFound) {
		return Status{}, fmt.Errorf("reading redirect status: looking up link %s: %w", lp.name, err)
	}
	plan := Plan(r.cfg)
	for _, fam := range []struct {
		ipt iptablesAPI
		v6  bool
	}{{ipt, false}, {ipt6, true}} {
		if fam.ipt == nil {
			continue
		}
		prefix := ""
		if fam.v6 {
			prefix = "ip6 "
		}
		famPlan := rulesOf(plan, fam.v6)
		for _, t := range tables {
			st, err := listTable(fam.ipt, t)
			if err != nil {
				return Status{}, fmt.Errorf("reading redirect status: %w", err)
			}
			seen := map[string]int{}
			for _, p := range famPlan {
				if p.Table == t {
					seen[p.Chain+" "+joinArgs(p.Args)]++
					s.Rules = append(s.Rules, RuleStatus{Rule: p, Present: slices.Contains(st.rules[p.Chain], joinArgs(p.Args))})
				}
			}
			for _, chain := range st.chains {
				for _, spec := range st.rules[chain] {
					if !owned(chain) && !owned(jumpTarget(spec)) {
						continue
					}
					if seen[chain+" "+spec] > 0 {
						seen[chain+" "+spec]--
						continue
					}
					s.Stale = append(s.Stale, prefix+t+": -A "+chain+" "+spec)
				}
				if owned(chain) && !slices.ContainsFunc(famPlan, func(p Rule) bool { return p.Table == t && p.Chain == chain }) {
					s.Stale = append(s.Stale, prefix+t+": -N "+chain)
				}
			}
		}
	}
	arpt := r.arpt
	if !r.resolved {
		for _, b := range []string{backend, otherBackend(backend)} {
			if a, err := r.sys.arp(b); err == nil {
				arpt = a
				break
			}
		}
	}
	s.ARP = arpt != nil
	if arpt != nil {
		st, err := listTable(arpt, "filter")
		if err != nil {
			return Status{}, fmt.Errorf("reading redirect status: %w", err)
		}
		for _, p := range arpRules(plan) {
			s.Rules = append(s.Rules, RuleStatus{Rule: p, Present: slices.Contains(st.rules[p.Chain], joinArgs(p.Args))})
		}
	}
	other := BackendLegacy
	if backend == BackendLegacy {
		other = BackendNFT
	}
	for _, v6 := range []bool{false, true} {
		oipt, err := r.sys.iptables(other, v6)
		if err != nil || (v6 && ipt6 == nil) {
			continue
		}
		prefix := ""
		if v6 {
			prefix = "ip6 "
		}
		for _, t := range tables {
			if present, err := oipt.TablePresent(t); err != nil || !present {
				continue
			}
			st, err := listTable(oipt, t)
			if err != nil {
				return Status{}, fmt.Errorf("reading redirect status: %w", err)
			}
			for _, chain := range st.chains {
				if owned(chain) {
					s.Leftovers = append(s.Leftovers, other+" "+prefix+t+": -N "+chain)
				}
			}
		}
	}
	return s, nil
}

// Cleanup removes what any earlier run left behind, found by ownership
// rather than from memory: jumps to and chains named IMDS-SHIM-* in the nat
// and filter tables of both backends (a leftover in the backend the host no
// longer uses still rewrites packets), addresses labelled "<link>:imds" on
// any link, and dummy links with the alias "imds-shim". Other rules and
// addresses are never touched. It is safe when nothing is there and
// continues past failures, returning them joined.
func Cleanup(ctx context.Context, log *slog.Logger) error {
	return cleanup(ctx, log, hostSystem())
}

func cleanup(ctx context.Context, log *slog.Logger, sys system) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, b := range []string{BackendNFT, BackendLegacy} {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("cleaning up: %w", err)
		}
		for _, v6 := range []bool{true, false} {
			ipt, err := sys.iptables(b, v6)
			if errors.Is(err, errNoBackend) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, t := range slices.Backward(tables) {
				removed, err := removeOwned(ipt, t)
				for _, x := range prefixAll(v6, removed) {
					log.Info("leftover removed", "backend", b, "what", x)
				}
				if v6 && err != nil && sys.ipv6("all") != nil {
					// No IPv6 in this kernel: ip6tables cannot list, and
					// there can be nothing of ours.
					log.Debug("not cleaning ip6tables", "err", err)
					continue
				}
				errs = append(errs, err)
			}
		}
	}
	for _, b := range []string{BackendNFT, BackendLegacy} {
		a, err := sys.arp(b)
		if err != nil {
			continue
		}
		removed, err := removeOwned(a, "filter")
		for _, x := range removed {
			log.Info("leftover removed", "backend", "arptables-"+b, "what", x)
		}
		errs = append(errs, err)
	}
	links, err := sys.links.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, l := range links {
		mine, err := hasOwnedAddr(sys.links, l)
		errs = append(errs, err)
		if mine || isOurDummy(l) {
			removed, err := delOwnedAddrs6(sys.links, l, netip.PrefixFrom(addr6, 128))
			for _, x := range removed {
				log.Info("leftover removed", "what", x)
			}
			errs = append(errs, err)
		}
		removed, err := delOwnedAddrs(sys.links, l)
		for _, x := range removed {
			log.Info("leftover removed", "what", x)
		}
		errs = append(errs, err)
		if isOurDummy(l) {
			if err := removeDummy(sys.links, l.Attrs().Name); err != nil {
				errs = append(errs, err)
				continue
			}
			log.Info("leftover removed", "what", "link "+l.Attrs().Name)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up: %w", err)
	}
	return nil
}

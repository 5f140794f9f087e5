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
	iptables func(backend string) (iptablesAPI, error) // wraps errNoBackend when not installed
	mode     func() (string, error)                    // backend of the `iptables` alternative
	ticker   func(time.Duration) (<-chan time.Time, func())
}

func hostSystem() system {
	// Opening a backend runs `iptables --version`; do it once per backend.
	var (
		mu     sync.Mutex
		opened = map[string]iptablesAPI{}
	)
	open := func(backend string) (iptablesAPI, error) {
		mu.Lock()
		defer mu.Unlock()
		if ipt, ok := opened[backend]; ok {
			return ipt, nil
		}
		ipt, err := openIPTables(backend)
		if err == nil {
			opened[backend] = ipt
		}
		return ipt, err
	}
	return system{
		links:    netlinkLinks{h: &netlink.Handle{}},
		iptables: open,
		mode:     iptablesMode,
		ticker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
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
	link     linkPlan
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
	if err == nil {
		var more []string
		more, err = r.ensure(ctx, ipt, lp, j)
		changes = append(changes, more...)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("setting up redirect: %w", err), j.rollback())
	}
	r.resolved, r.active, r.backend, r.ipt, r.link = true, true, backend, ipt, lp
	if a := r.foreignAddr(); a != "" {
		r.log.Warn("address already present without the imds-shim label; it is used and will be left in place",
			"addr", r.cfg.prefix(), "link", lp.name, "label", a)
	}
	removed := r.purgeOtherBackend()
	r.log.Info("redirect set up", "addr", r.cfg.prefix(), "port", r.cfg.Port, "target", r.cfg.Target,
		"link", lp.String(), "backend", backend, "changed", changes, "purged_other_backend", removed,
		"duration", time.Since(start))
	return nil
}

// ensure converges the address and the rules of both tables.
func (r *Redirector) ensure(ctx context.Context, ipt iptablesAPI, lp linkPlan, j *journal) ([]string, error) {
	changes, err := ensureAddr(r.sys.links, lp, r.cfg.prefix(), j)
	if err != nil {
		return changes, err
	}
	plan := Plan(r.cfg)
	for _, t := range tables {
		if err := ctx.Err(); err != nil {
			return changes, err
		}
		c, err := ensureTable(ipt, t, plan, j)
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
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
	ipt, err := r.sys.iptables(other)
	if err != nil {
		return nil
	}
	var removed []string
	for _, t := range slices.Backward(tables) {
		rm, err := removeOwned(ipt, t)
		removed = append(removed, rm...)
		if err != nil {
			r.log.Warn("removing leftovers from the other iptables backend", "backend", other, "err", err)
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
		ipt, err := r.sys.iptables(r.cfg.Backend)
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
		ipt, err := sys.iptables(b)
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
	for _, t := range slices.Backward(tables) {
		rm, err := removeOwned(r.ipt, t)
		removed = append(removed, rm...)
		errs = append(errs, err)
	}
	if l, err := r.sys.links.LinkByName(r.link.name); err == nil {
		rm, err := delOwnedAddrs(r.sys.links, l)
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
// subscription) and every ReconcileInterval (rules have no change events),
// logging each repair and reporting it to the Observer. A failed repair is
// logged and retried on the next tick. Run requires a successful Setup and
// stops repairing once Teardown has run.
func (r *Redirector) Run(ctx context.Context) error {
	r.mu.Lock()
	active := r.active
	r.mu.Unlock()
	if !active {
		return errors.New("running redirect: Setup has not succeeded")
	}
	tick, stop := r.sys.ticker(r.cfg.ReconcileInterval)
	defer stop()
	var sub *subscription
	defer func() { sub.close() }()
	for {
		if sub == nil {
			sub = r.subscribe()
			// Anything removed while unsubscribed is caught here.
			r.reconcile(ctx, "subscribed")
		}
		var events <-chan netlink.AddrUpdate
		if sub != nil {
			events = sub.ch
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			r.reconcile(ctx, "periodic")
		case u, ok := <-events:
			if !ok {
				r.log.Warn("address subscription ended; relying on periodic checks until it is renewed")
				sub.close()
				sub = nil
				continue
			}
			if !u.NewAddr && u.LinkAddress.IP.Equal(r.cfg.Addr.AsSlice()) {
				r.reconcile(ctx, "address removed")
			}
		}
	}
}

// subscription is a live netlink address subscription.
type subscription struct {
	ch   chan netlink.AddrUpdate
	done chan struct{}
}

func (r *Redirector) subscribe() *subscription {
	s := &subscription{ch: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
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

// close stops the subscription and drains it, so its reader goroutine,
// which may be blocked sending, can exit.
func (s *subscription) close() {
	if s == nil {
		return
	}
	close(s.done)
	for range s.ch {
	}
}

// reconcile converges everything once, reporting repairs.
func (r *Redirector) reconcile(ctx context.Context, why string) {
	r.mu.Lock()
	if !r.active {
		r.mu.Unlock()
		return
	}
	changes, err := r.ensure(ctx, r.ipt, r.link, nil)
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
	Rules       []RuleStatus // the planned rules
	Stale       []string     // rules and chains of ours that are not planned
	Leftovers   []string     // our rules and chains in the other backend
}

// RuleStatus is one planned rule and whether it is installed.
type RuleStatus struct {
	Rule    Rule
	Present bool
}

// OK reports whether everything planned is installed and nothing else of
// ours is.
func (s Status) OK() bool {
	if !s.LinkPresent || !s.LinkUp || !s.AddrPresent || len(s.Stale) > 0 || len(s.Leftovers) > 0 {
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
	for _, r := range s.Rules {
		fmt.Fprintf(&b, "%s %s: %s\n", yes(r.Present), r.Rule.Table, r.Rule)
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
	s := Status{Backend: backend, Link: lp.name, Addr: r.cfg.prefix()}
	if l, err := r.sys.links.LinkByName(lp.name); err == nil {
		s.LinkPresent = !lp.dummy || isOurDummy(l)
		s.LinkUp = l.Attrs().Flags&net.FlagUp != 0
		a, err := findAddr(r.sys.links, l, s.Addr)
		if err != nil {
			return Status{}, fmt.Errorf("reading redirect status: %w", err)
		}
		s.AddrPresent, s.AddrOwned = a != nil, a != nil && a.Label == label(lp.name)
	} else if !errors.Is(err, errLinkNotFound) {
		return Status{}, fmt.Errorf("reading redirect status: looking up link %s: %w", lp.name, err)
	}
	plan := Plan(r.cfg)
	for _, t := range tables {
		st, err := listTable(ipt, t)
		if err != nil {
			return Status{}, fmt.Errorf("reading redirect status: %w", err)
		}
		seen := map[string]int{}
		for _, p := range plan {
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
				s.Stale = append(s.Stale, t+": -A "+chain+" "+spec)
			}
			if owned(chain) && !slices.ContainsFunc(plan, func(p Rule) bool { return p.Table == t && p.Chain == chain }) {
				s.Stale = append(s.Stale, t+": -N "+chain)
			}
		}
	}
	other := BackendLegacy
	if backend == BackendLegacy {
		other = BackendNFT
	}
	if oipt, err := r.sys.iptables(other); err == nil {
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
					s.Leftovers = append(s.Leftovers, other+" "+t+": -N "+chain)
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
		ipt, err := sys.iptables(b)
		if errors.Is(err, errNoBackend) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, t := range slices.Backward(tables) {
			removed, err := removeOwned(ipt, t)
			for _, x := range removed {
				log.Info("leftover removed", "backend", b, "what", x)
			}
			errs = append(errs, err)
		}
	}
	links, err := sys.links.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, l := range links {
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

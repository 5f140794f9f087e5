package netredirect

// Tests against the real kernel. They run only as root, inside the private
// network namespace that nstest.Main creates for this test binary, so they
// never touch the host; they share that namespace, so they do not run in
// parallel and each leaves it as it found it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imds-shim/imds-shim/pkg/internal/hoststate"
	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var backends = []string{BackendNFT, BackendLegacy}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// iptablesSave returns the rules, user chains and non-ACCEPT policies of a
// backend as iptables-save (cmd "iptables") or ip6tables-save (cmd
// "ip6tables") prints them. Empty built-in chains are dropped: nft keeps a
// table once used, and the kernel keeps a legacy table once listed, neither
// of which is anyone's rule; counters are dropped too.
func iptablesSave(t testing.TB, backend string) string { return xtablesSave(t, "iptables", backend) }

func xtablesSave(t testing.TB, cmd, backend string) string {
	t.Helper()
	var b strings.Builder
	table, body := "", []string{}
	flush := func() {
		if len(body) > 0 {
			fmt.Fprintf(&b, "*%s\n%s\n", table, strings.Join(body, "\n"))
		}
	}
	for _, l := range strings.Split(run(t, cmd+"-"+backend+"-save"), "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			flush()
			table, body = l[1:], nil
		case strings.HasPrefix(l, ":"):
			f := strings.Fields(l)
			if f[1] != "ACCEPT" {
				body = append(body, f[0]+" "+f[1])
			}
		case strings.HasPrefix(l, "-"):
			body = append(body, l)
		}
	}
	flush()
	return b.String()
}

// hostState is everything the package may touch, as facts
// (pkg/internal/hoststate): both backends' rules for IPv4, IPv6 and ARP,
// every link by name, every address by link name (no index, no transient
// flags, no lifetimes) and the sysctls that decide who can reach a local
// address, which the package must never change (issue 13).
func hostState(t testing.TB) *hoststate.Snapshot {
	t.Helper()
	s, err := hoststate.Take(hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ipLink is a link as `ip -j -d addr show` prints it.
type ipLink struct {
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	Alias    string   `json:"ifalias"`
	Address  string   `json:"address"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
	Addrs []struct {
		Family string `json:"family"`
		Local  string `json:"local"`
		Len    int    `json:"prefixlen"`
		Scope  string `json:"scope"`
		Label  string `json:"label"`
	} `json:"addr_info"`
}

// sameHost fails t unless the host state equals before.
func sameHost(t testing.TB, what string, before *hoststate.Snapshot) {
	t.Helper()
	if d := before.Diff(hostState(t)); d != "" {
		t.Errorf("%s: host state changed (-before +now):\n%s", what, d)
	}
}

// cleanHost makes sure a failing test does not poison the next one.
func cleanHost(t *testing.T) {
	t.Cleanup(func() {
		if err := Cleanup(context.Background(), testLogger(t)); err != nil {
			t.Errorf("Cleanup at the end of the test: %v", err)
		}
	})
}

// listener serves a fixed answer on 127.0.0.1 and a random port.
func listener(t *testing.T) netip.AddrPort { return listenOn(t, "127.0.0.1:0") }

// listenOn serves a fixed answer, naming itself, on addr.
func listenOn(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "listener %s, path %s", addr, r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// get fetches http://169.254.169.254<path> on a fresh connection.
func get(path string) (string, error) { return getURL("http://169.254.169.254" + path) }

func getURL(url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// mustGet fetches path through 169.254.169.254 and checks that target
// answered.
func mustGet(t *testing.T, target netip.AddrPort, path string) {
	t.Helper()
	body, err := get(path)
	if err != nil {
		t.Fatalf("GET http://169.254.169.254%s: %v", path, err)
	}
	if want := "listener " + target.String() + ", path " + path; body != want {
		t.Fatalf("GET http://169.254.169.254%s = %q, want %q", path, body, want)
	}
}

func mustNotGet(t *testing.T) {
	t.Helper()
	if body, err := get("/"); err == nil {
		t.Fatalf("GET http://169.254.169.254/ answered %q with no redirect installed", body)
	}
}

func newKernelRedirector(t *testing.T, cfg Config, obs Observer) *Redirector {
	t.Helper()
	r, err := New(cfg, Options{Logger: testLogger(t), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKernelRedirectBothBackends(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	target := listener(t)
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			before := hostState(t)
			mustNotGet(t)
			r := newKernelRedirector(t, Config{Link: LinkLo, Backend: be, Target: target}, nil)
			start := time.Now()
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Logf("Setup (%s) took %v", be, time.Since(start))
			mustGet(t, target, "/latest/meta-data/")
			if !r.IPv6Active() || len(r.Listeners()) != 2 {
				t.Fatalf("IPv6 not active in a namespace with IPv6 (listeners %v)", r.Listeners())
			}
			t6 := listenOn(t, r.Listeners()[1].String())
			if body, err := getURL("http://[fd00:ec2::254]/v6"); err != nil || body != "listener "+t6.String()+", path /v6" {
				t.Errorf("GET http://[fd00:ec2::254]/v6 = %q, %v", body, err)
			}
			afterSetup := hostState(t)
			// A second Setup, here and by a fresh Redirector (a restart),
			// finds everything in place: its change list is empty.
			for _, again := range []*Redirector{r, newKernelRedirector(t, Config{Link: LinkLo, Backend: be, Target: target}, nil)} {
				if err := again.Setup(t.Context()); err != nil {
					t.Fatal(err)
				}
				if len(again.changes) != 0 {
					t.Errorf("a second Setup changed %q", again.changes)
				}
			}
			sameHost(t, "second Setup", afterSetup)
			for _, want := range []string{
				"ipv4 nat: -A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT",
				"ipv4 nat: -A IMDS-SHIM-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination " + target.String(),
				"ipv4 filter: -A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT",
				"ipv6 nat: -A IMDS-SHIM-OUTPUT -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination " + IPv6Target(target).String(),
				"address 169.254.169.254/32 on lo scope host label lo:imds",
				"address fd00:ec2::254/128 on lo scope global",
			} {
				fact := want
				if strings.HasPrefix(want, "ipv") {
					fact = "iptables " + be + " " + want // a rule, in this test's backend
				}
				if !afterSetup.Has(fact) {
					t.Errorf("host state after Setup lacks %q:\n%s", want, strings.Join(afterSetup.Facts(), "\n"))
				}
			}
			other := BackendLegacy
			if be == BackendLegacy {
				other = BackendNFT
			}
			if s := iptablesSave(t, other) + xtablesSave(t, "ip6tables", other); strings.Contains(s, "IMDS-SHIM") {
				t.Errorf("rules went into the other backend %s too:\n%s", other, s)
			}
			st, err := r.Status(t.Context())
			if err != nil || !st.OK() || st.Backend != be || !st.IPv6 {
				t.Errorf("Status (err %v):\n%s", err, st)
			}
			// As `imds-shim status` sees it from another process.
			st, err = newKernelRedirector(t, Config{Link: LinkLo, Backend: be, Target: target}, nil).Status(t.Context())
			if err != nil || !st.OK() || !st.AddrOwned || !st.IPv6 {
				t.Errorf("Status of a fresh Redirector (err %v):\n%s", err, st)
			}
			sameHost(t, "Status", afterSetup)
			start = time.Now()
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Logf("Teardown (%s) took %v", be, time.Since(start))
			sameHost(t, "after Teardown", before)
			mustNotGet(t)
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatalf("second Teardown: %v", err)
			}
			sameHost(t, "after a second Teardown", before)
		})
	}
}

// TestKernelPlanIsWhatIptablesPrints installs the plan of a configuration
// with every kind of rule (containers, a fence for a non-loopback target,
// IPv6) with real iptables, both backends, and requires `iptables -S` and
// `ip6tables -S` to print back exactly the rules of Plan: a rule printed
// differently would never look installed and be re-added every reconcile.
func TestKernelPlanIsWhatIptablesPrints(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			cfg := Config{Link: LinkLo, Backend: be, Containers: []string{"h6br0", "h6notyet"},
				Target: netip.MustParseAddrPort("10.66.0.1:8254"), IPv6: IPv6True}
			r := newKernelRedirector(t, cfg, nil)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Teardown(context.Background()) })
			var got []string
			bin := map[string]string{"iptables": "iptables-" + be, "ip6tables": "ip6tables-" + be, "arptables": "arptables-" + r.arpBE}
			for _, cmd := range []string{"iptables", "ip6tables", "arptables"} {
				for _, table := range tables {
					if cmd == "arptables" && table != "filter" {
						continue
					}
					for _, l := range strings.Split(run(t, bin[cmd], "-t", table, "-S"), "\n") {
						if strings.Contains(l, ChainPrefix) && strings.HasPrefix(l, "-A ") {
							got = append(got, cmd+" "+table+" "+l)
						}
					}
				}
			}
			var want []string
			// Compared as sets: -S lists the jumps in built-in chains
			// first, then the owned chains in creation order.
			for _, r := range Plan(cfg) {
				want = append(want, r.Family()+" "+r.Table+" "+r.String())
			}
			slices.Sort(got)
			slices.Sort(want)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("Plan vs what iptables-%s prints (-plan +printed):\n%s", be, d)
			}
		})
	}
}

// TestKernelTargetChange is a config reload: a new Redirector with another
// listener converges the rules of the old one instead of adding to them.
func TestKernelTargetChange(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	before := hostState(t)
	oldTarget, newTarget := listener(t), listener(t)
	if err := newKernelRedirector(t, Config{Link: LinkLo, Target: oldTarget}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := newKernelRedirector(t, Config{Link: LinkLo, Target: newTarget}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, newTarget, "/")
	st, err := r.Status(t.Context())
	if err != nil || !st.OK() {
		t.Errorf("Status after the target change (err %v):\n%s", err, st)
	}
	save := iptablesSave(t, BackendNFT) + iptablesSave(t, BackendLegacy)
	if strings.Contains(save, oldTarget.String()) || strings.Count(save, "-j DNAT") != 1 {
		t.Errorf("rules after the target change:\n%s", save)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Teardown", before)
}

// dummySupported creates and deletes a dummy link to learn whether the
// kernel has the driver.
func dummySupported(t *testing.T) error {
	t.Helper()
	probe := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "imdsprobe0"}}
	if err := netlink.LinkAdd(probe); err != nil {
		return err
	}
	if err := netlink.LinkDel(probe); err != nil {
		t.Fatal(err)
	}
	return nil
}

func TestKernelAutoLink(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	before := hostState(t)
	target := listener(t)
	r := newKernelRedirector(t, Config{Target: target}, nil) // link and backend auto
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, target, "/")
	st, err := r.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantLink := DefaultDummyName
	if err := dummySupported(t); errors.Is(err, unix.EOPNOTSUPP) {
		wantLink = LinkLo
	}
	if st.Link != wantLink || !st.OK() {
		t.Errorf("auto link chose %q, want %q; status:\n%s", st.Link, wantLink, st)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Teardown", before)
}

func TestKernelDummyLink(t *testing.T) {
	nstest.RequireRootNetns(t)
	if err := dummySupported(t); errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("skipping the dummy-link path: this kernel has no dummy driver (creating a dummy link: %v); "+
			"Link \"auto\" falls back to lo here, which TestKernelAutoLink covers", err)
	} else if err != nil {
		t.Fatal(err)
	}
	cleanHost(t)
	before := hostState(t)
	target := listener(t)
	r := newKernelRedirector(t, Config{Link: LinkDummy, Target: target}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, target, "/")
	l, err := netlink.LinkByName(DefaultDummyName)
	if err != nil || l.Attrs().Alias != LinkAlias || l.Type() != "dummy" {
		t.Fatalf("dummy link %v, err %v", l, err)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Teardown", before)
}

// TestKernelExistingLink puts the address on a veth, not lo: the DNAT to
// 127.0.0.1 must work there too without route_localnet.
func TestKernelExistingLink(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	before := hostState(t)
	run(t, "ip", "link", "add", "imdsv0", "type", "veth", "peer", "name", "imdsv1")
	vethGone := false
	t.Cleanup(func() {
		if !vethGone {
			run(t, "ip", "link", "del", "imdsv0")
		}
	})
	// No IPv6 link-local addresses on the test's own veth: the kernel adds
	// them at some point after "up", which would race the snapshots.
	run(t, "ip", "link", "set", "imdsv0", "addrgenmode", "none")
	run(t, "ip", "link", "set", "imdsv1", "addrgenmode", "none")
	run(t, "ip", "link", "set", "imdsv0", "up")
	run(t, "ip", "link", "set", "imdsv1", "up")
	withVeth := hostState(t)
	if rl := strings.TrimSpace(run(t, "sysctl", "-n", "net.ipv4.conf.all.route_localnet")); rl != "0" {
		t.Fatalf("route_localnet is %s in the test namespace", rl)
	}
	target := listener(t)
	r := newKernelRedirector(t, Config{Link: "imdsv0", Target: target}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustGet(t, target, "/via-veth")
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Teardown (the veth stays)", withVeth)
	run(t, "ip", "link", "del", "imdsv0")
	vethGone = true
	sameHost(t, "after deleting the veth", before)
}

// timedObserver hands repairs to the test.
type timedObserver struct{ ch chan string }

func (o timedObserver) Repaired(what string) { o.ch <- what }

// waitFor waits for the repairs in want, bounded by limit (a bound for a
// failing test, not a synchronisation: a passing test never waits for it).
func waitFor(t *testing.T, o timedObserver, limit time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	got := map[string]bool{}
	deadline := time.After(limit)
	for {
		done := true
		for _, w := range want {
			done = done && got[w]
		}
		if done {
			return time.Since(start)
		}
		select {
		case w := <-o.ch:
			got[w] = true
		case <-deadline:
			t.Fatalf("within %v saw repairs %v, want %v", limit, got, want)
		}
	}
}

// tickedRedirector is a Redirector on the real kernel whose reconcile ticks
// the test sends.
func tickedRedirector(t *testing.T, cfg Config, obs Observer) (*Redirector, chan time.Time) {
	t.Helper()
	tick := make(chan time.Time)
	sys := hostSystem()
	sys.ticker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
	r, err := newRedirector(cfg, Options{Logger: testLogger(t), Observer: obs}, sys)
	if err != nil {
		t.Fatal(err)
	}
	return r, tick
}

// TestKernelSteadyStateAndSelfHealing: Run over several reconcile ticks on
// an intact host repairs nothing (each tick is handed over on an unbuffered
// channel, and Run takes the next one only after the reconcile of the
// previous one, so the ticks are driven without sleeping); then what others
// remove is repaired on the next tick (rules) or at once (the address).
func TestKernelSteadyStateAndSelfHealing(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			ipt := "iptables-" + be
			before := hostState(t)
			obs := timedObserver{ch: make(chan string, 100)}
			cfg := Config{Link: LinkLo, Backend: be, Target: netip.MustParseAddrPort("127.0.0.1:8254")}
			r, tick := tickedRedirector(t, cfg, obs)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			runDone := make(chan error, 1)
			go func() { runDone <- r.Run(ctx) }()
			const ticks = 5
			for range ticks + 1 { // the last send returns once the fifth reconcile is done
				tick <- time.Now()
			}
			select {
			case w := <-obs.ch:
				t.Fatalf("steady state: Run repaired %q over %d ticks on an intact host", w, ticks)
			default:
			}

			run(t, ipt, "-t", "nat", "-F", "OUTPUT")
			tick <- time.Now()
			waitFor(t, obs, 10*time.Second, "nat/OUTPUT jump")

			// Chains deleted by someone else, each table in one
			// transaction: separate -F and -X commands can meet EBUSY from
			// iptables-nft while the kernel still releases the jump
			// (seen once in ~10 runs).
			restore := exec.Command(ipt+"-restore", "--noflush")
			restore.Stdin = strings.NewReader("*nat\n-F OUTPUT\n-F " + natChain + "\n-X " + natChain + "\nCOMMIT\n" +
				"*filter\n-D INPUT -m comment --comment " + Comment + " -j " + fenceChain + "\n-F " + fenceChain + "\n-X " + fenceChain + "\nCOMMIT\n")
			if out, err := restore.CombinedOutput(); err != nil {
				t.Fatalf("%s-restore: %v\n%s", ipt, err, out)
			}
			run(t, "ip6"+ipt[2:], "-t", "nat", "-F", "OUTPUT")
			tick <- time.Now()
			waitFor(t, obs, 10*time.Second, "nat/OUTPUT jump", "nat/"+natChain+" chain", "nat/"+natChain+" rules",
				"filter/INPUT jump", "filter/"+fenceChain+" chain", "filter/"+fenceChain+" rules", "ip6 nat/OUTPUT jump")

			run(t, "ip", "addr", "del", "169.254.169.254/32", "dev", "lo")
			waitFor(t, obs, 10*time.Second, "address 169.254.169.254/32 on lo") // on the netlink event, no tick
			run(t, "ip", "addr", "del", "fd00:ec2::254/128", "dev", "lo")
			waitFor(t, obs, 10*time.Second, "address fd00:ec2::254/128 on lo")

			// And steady again: more ticks, no repairs.
			for range ticks + 1 {
				tick <- time.Now()
			}
			select {
			case w := <-obs.ch:
				t.Errorf("after the repairs: Run repaired %q again", w)
			default:
			}
			endRun(t, r, cancel, runDone, before)
		})
	}
}

// TestKernelRepairsOnRuleChange: with the nft backend, rules that others
// remove are repaired on the kernel's change event, with no reconcile tick:
// a flushed chain, then both families' tables replaced as by a firewall
// reload.
func TestKernelRepairsOnRuleChange(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	before := hostState(t)
	obs := timedObserver{ch: make(chan string, 100)}
	cfg := Config{Link: LinkLo, Backend: BackendNFT, Target: netip.MustParseAddrPort("127.0.0.1:8254")}
	r, _ := tickedRedirector(t, cfg, obs) // no tick is ever sent
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	installed := hostState(t)
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	check := func(what string) {
		t.Helper()
		if d := installed.Diff(hostState(t)); d != "" {
			t.Errorf("%s (-installed +now):\n%s", what, d)
		}
	}
	// The first flush may come before Run has subscribed, and be repaired
	// by the check Run makes then; every later one only by a change event.
	for i := range 2 {
		run(t, "iptables-nft", "-t", "nat", "-F", "OUTPUT")
		d := waitFor(t, obs, 10*time.Second, "nat/OUTPUT jump")
		t.Logf("flush %d of nat OUTPUT repaired after %v", i+1, d)
		check("after a flushed nat OUTPUT was repaired")
	}

	// A firewall reload: both families' nat and filter tables replaced by
	// a saved configuration that does not have our rules.
	for _, cmd := range []string{"iptables-nft-restore", "ip6tables-nft-restore"} {
		restore := exec.Command(cmd)
		restore.Stdin = strings.NewReader("*nat\nCOMMIT\n*filter\nCOMMIT\n")
		if out, err := restore.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
	d := waitFor(t, obs, 10*time.Second, "nat/OUTPUT jump", "nat/"+natChain+" chain", "filter/INPUT jump", "ip6 nat/OUTPUT jump")
	t.Logf("reloaded tables repaired after %v", d)
	check("after a reload was repaired")

	endRun(t, r, cancel, runDone, before)
}

// endRun stops Run (cancel ends it, runDone has its result), tears the
// redirect down and checks that the host is as it was before.
func endRun(t *testing.T, r *Redirector, cancel context.CancelFunc, runDone <-chan error, before *hoststate.Snapshot) {
	t.Helper()
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("Run = %v", err)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Teardown", before)
}

const helperEnv = "IMDS_SHIM_NETREDIRECT_HELPER"

// crashCounter SIGKILLs the process group right after the n-th change or
// query the helper makes to the kernel: a crash at an exact step of Cleanup
// or Setup, with the step itself done and nothing after it.
type crashCounter struct {
	steps atomic.Int64
	at    int64 // 0: never
}

func (c *crashCounter) step() {
	if c.steps.Add(1) == c.at {
		_ = syscall.Kill(0, syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

type crashIPT struct {
	iptablesAPI
	c *crashCounter
}

func (x crashIPT) NewChain(table, chain string) error {
	defer x.c.step()
	return x.iptablesAPI.NewChain(table, chain)
}
func (x crashIPT) ClearAndDeleteChain(table, chain string) error {
	defer x.c.step()
	return x.iptablesAPI.ClearAndDeleteChain(table, chain)
}
func (x crashIPT) Append(table, chain string, spec ...string) error {
	defer x.c.step()
	return x.iptablesAPI.Append(table, chain, spec...)
}
func (x crashIPT) Insert(table, chain string, pos int, spec ...string) error {
	defer x.c.step()
	return x.iptablesAPI.Insert(table, chain, pos, spec...)
}
func (x crashIPT) Delete(table, chain string, spec ...string) error {
	defer x.c.step()
	return x.iptablesAPI.Delete(table, chain, spec...)
}
func (x crashIPT) DeleteById(table, chain string, id int) error {
	defer x.c.step()
	return x.iptablesAPI.DeleteById(table, chain, id)
}
func (x crashIPT) Restore(input string) error {
	r, ok := x.iptablesAPI.(restorer)
	if !ok {
		return errors.New("no restore command")
	}
	defer x.c.step()
	return r.Restore(input)
}
func (x crashIPT) ListTable(table string) ([]string, error) {
	defer x.c.step()
	return x.iptablesAPI.ListTable(table)
}

type crashLinks struct {
	linksAPI
	c *crashCounter
}

func (x crashLinks) LinkAdd(l netlink.Link) error {
	defer x.c.step()
	return x.linksAPI.LinkAdd(l)
}
func (x crashLinks) LinkDel(l netlink.Link) error {
	defer x.c.step()
	return x.linksAPI.LinkDel(l)
}
func (x crashLinks) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	defer x.c.step()
	return x.linksAPI.AddrAdd(l, a)
}
func (x crashLinks) AddrDel(l netlink.Link, a *netlink.Addr) error {
	defer x.c.step()
	return x.linksAPI.AddrDel(l, a)
}
func (x crashLinks) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	defer x.c.step()
	return x.linksAPI.AddrList(l, family)
}

// helperMain runs instead of the tests when the crash test starts this
// binary as a stand-in daemon: optionally Cleanup, then Setup, on the real
// kernel, crashing after the n-th kernel step if asked; then "ready" on
// stdout, then wait to be killed.
func helperMain() bool {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return false
	}
	if !nstest.InPrivateNetns() {
		fmt.Fprintln(os.Stderr, "helper: refusing to run outside the test's private network namespace")
		os.Exit(2)
	}
	n, _ := strconv.Atoi(os.Getenv(helperEnv + "_CRASH_AT"))
	c := &crashCounter{at: int64(n)}
	sys := hostSystem()
	open := sys.iptables
	sys.iptables = func(b string, v6 bool) (iptablesAPI, error) {
		ipt, err := open(b, v6)
		if err != nil {
			return nil, err
		}
		return crashIPT{ipt, c}, nil
	}
	sys.links = crashLinks{sys.links, c}
	ctx := context.Background()
	if strings.Contains(mode, "cleanup") {
		if err := cleanup(ctx, nil, sys); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
	}
	cfg := Config{Link: LinkLo, Backend: BackendNFT, Target: netip.MustParseAddrPort(os.Getenv(helperEnv + "_TARGET"))}
	r, err := newRedirector(cfg, Options{}, sys)
	if err == nil {
		err = r.Setup(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	fmt.Println("ready", c.steps.Load())
	select {}
}

// TestKernelCrashCycles starts a stand-in daemon 50 times on the real kernel
// and kills it with SIGKILL each time: four times in five right after a
// random step of its Cleanup and Setup (an address or rule just added or
// removed, a listing just read), else once it is ready. The whole process
// group dies, as systemd kills the unit's cgroup, so no orphaned iptables
// command runs on into the next start. Afterwards exactly one copy of each
// rule and of the address must be installed.
func TestKernelCrashCycles(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	before := hostState(t)
	target := listener(t)
	// start runs the helper; it returns how many steps the helper took to
	// get ready, or 0 if it crashed itself before.
	start := func(mode string, crashAt int) int {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_TARGET="+target.String(),
			helperEnv+"_CRASH_AT="+strconv.Itoa(crashAt))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		steps := 0
		if _, err := fmt.Sscanf(line, "ready %d\n", &steps); err == nil {
			if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("helper (mode %s, crash at %d) ended with %v, not SIGKILL (said %q)", mode, crashAt, err, line)
		}
		return steps
	}
	// Each chain shows once in a -save declaration and once per rule in or
	// jumping to it.
	plan := Plan(Config{Target: target})
	wantMarks := len(plan)
	for _, r := range plan {
		if r.Position > 0 {
			wantMarks++ // the chain's declaration
		}
	}
	states := map[string]int{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t0 := time.Now()
	crashed, crashTime := 0, time.Duration(0)
	steps := map[string]int{} // steps to ready, per mode, as last seen
	for i := range 50 {
		mode := "setup"
		if i%2 == 0 {
			mode = "cleanup+setup" // as the daemon starts
		}
		crashAt := 0 // run until ready, then get killed
		if n := steps[mode]; n > 0 && i%5 != 4 {
			crashAt = 1 + rng.IntN(n)
		}
		c0 := time.Now()
		if n := start(mode, crashAt); n > 0 {
			steps[mode] = max(steps[mode], n)
		} else {
			crashed++
			crashTime += time.Since(c0)
		}
		// Where did the crash leave the host? Only logged: the assertion
		// is on the state after the last start.
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := netlink.AddrList(lo, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		addr := slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(net.IPv4(169, 254, 169, 254)) })
		rules := strings.Count(run(t, "iptables-nft-save")+run(t, "ip6tables-nft-save")+run(t, "arptables-nft-save"), "IMDS-SHIM")
		states[fmt.Sprintf("addr=%t rules=%d/%d", addr, rules, wantMarks)]++
	}
	readyStart := time.Now()
	if start("setup", 0) == 0 { // a last start that completes before its kill
		t.Fatal("the last start did not get ready")
	}
	t.Logf("51 start/SIGKILL cycles took %v (%d crashed mid-way, %v on average; steps to ready %v); the last start took %v; states left: %v",
		time.Since(t0), crashed, crashTime/time.Duration(max(crashed, 1)), steps, time.Since(readyStart), states)
	if crashed < 20 {
		t.Errorf("only %d of 50 starts crashed mid-way; the crash points are not being reached", crashed)
	}

	got4, got6, gotARP := iptablesSave(t, BackendNFT), xtablesSave(t, "ip6tables", BackendNFT), xtablesSave(t, "arptables", BackendNFT)
	for _, rule := range plan {
		got := map[string]string{"iptables": got4, "ip6tables": got6, "arptables": gotARP}[rule.Family()]
		if n := strings.Count(got, rule.String()+"\n"); n != 1 {
			t.Errorf("%d copies of %q after the crashes:\n%s", n, rule, got)
		}
	}
	// The planned rules and chain declarations: nothing else of ours.
	if n := strings.Count(got4+got6+gotARP, "IMDS-SHIM"); n != wantMarks {
		t.Errorf("unexpected rules of ours after the crashes (%d marks, want %d):\n%s%s%s", n, wantMarks, got4, got6, gotARP)
	}
	if s := iptablesSave(t, BackendLegacy) + xtablesSave(t, "ip6tables", BackendLegacy); strings.Contains(s, "IMDS-SHIM") {
		t.Errorf("legacy holds our rules:\n%s", s)
	}
	if n := strings.Count(run(t, "ip", "-4", "addr", "show"), "169.254.169.254/32"); n != 1 {
		t.Errorf("%d copies of the address after the crashes", n)
	}
	if err := Cleanup(t.Context(), testLogger(t)); err != nil {
		t.Fatal(err)
	}
	sameHost(t, "after Cleanup", before)
}

func TestKernelCleanupKeepsCanaries(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	initial := hostState(t)
	// Other software's state, some of it close to ours.
	run(t, "iptables-nft", "-t", "nat", "-A", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
	run(t, "iptables-legacy", "-t", "filter", "-A", "INPUT", "-m", "comment", "--comment", "imds-shim", "-j", "ACCEPT")
	run(t, "iptables-nft", "-t", "nat", "-N", "SHIM-OUTPUT")
	run(t, "ip", "addr", "add", "169.254.169.253/32", "dev", "lo")
	run(t, "ip", "addr", "add", "169.254.169.252/32", "dev", "lo", "label", "lo:other")
	t.Cleanup(func() {
		run(t, "iptables-nft", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
		run(t, "iptables-legacy", "-t", "filter", "-D", "INPUT", "-m", "comment", "--comment", "imds-shim", "-j", "ACCEPT")
		run(t, "iptables-nft", "-t", "nat", "-X", "SHIM-OUTPUT")
		run(t, "ip", "addr", "del", "169.254.169.253/32", "dev", "lo")
		run(t, "ip", "addr", "del", "169.254.169.252/32", "dev", "lo")
		sameHost(t, "after removing the canaries", initial)
	})
	before := hostState(t)
	if err := Cleanup(t.Context(), testLogger(t)); err != nil {
		t.Fatalf("Cleanup with nothing of ours: %v", err)
	}
	sameHost(t, "Cleanup with nothing of ours", before)

	// Leftovers in both backends, as a crash and a backend switch leave them.
	r := newKernelRedirector(t, Config{Link: LinkLo, Backend: BackendNFT}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	run(t, "iptables-legacy", "-t", "nat", "-N", natChain)
	run(t, "iptables-legacy", "-t", "nat", "-A", natChain, "-p", "tcp", "-j", "DNAT", "--to-destination", "127.0.0.1:1")
	run(t, "iptables-legacy", "-t", "nat", "-I", "OUTPUT", "-j", natChain)
	start := time.Now()
	if err := Cleanup(t.Context(), testLogger(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("Cleanup of leftovers in both backends took %v", time.Since(start))
	sameHost(t, "after Cleanup", before)
}

func TestKernelDetectBackend(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	alt := parseIPTablesVersion(run(t, "iptables", "-V"))
	b, _, err := detectBackend(hostSystem(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// No foreign rules in either backend (the other tests leave none): the
	// alternative decides.
	if b != alt {
		t.Errorf("detected %q on an empty host, want the alternative's %q", b, alt)
	}
	other := BackendLegacy
	if alt == BackendLegacy {
		other = BackendNFT
	}
	run(t, "iptables-"+other, "-t", "filter", "-A", "INPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
	defer run(t, "iptables-"+other, "-t", "filter", "-D", "INPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
	if b, _, err = detectBackend(hostSystem(), testLogger(t)); err != nil || b != other {
		t.Errorf("detected %q, %v with a rule in %s only; want %s", b, err, other, other)
	}
}

func TestKernelRenderIsRestoreInput(t *testing.T) {
	nstest.RequireRootNetns(t)
	cfg := Config{Containers: []string{"docker0"}, Target: netip.MustParseAddrPort("10.1.2.3:254")}
	v4, rest, ok1 := strings.Cut(cfg.Render(), "# ip6tables-restore input\n")
	v6, arp, ok2 := strings.Cut(rest, "# arptables-restore input\n")
	if !ok1 || !ok2 {
		t.Fatalf("Render lacks the ip6tables or arptables section:\n%s", cfg.Render())
	}
	for _, be := range backends {
		for cmdName, input := range map[string]string{"iptables": v4, "ip6tables": v6, "arptables": arp} {
			if _, err := exec.LookPath(cmdName + "-" + be + "-restore"); err != nil && cmdName == "arptables" {
				continue
			}
			cmd := exec.Command(cmdName+"-"+be+"-restore", "--test", "--noflush")
			cmd.Stdin = strings.NewReader(input)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s-%s-restore --test rejects Render's output: %v\n%s", cmdName, be, err, out)
			}
		}
	}
}

// TestKernelRestoreRemoval: the real restore commands of both backends and
// both families take what teardown sends (so it never falls back to a
// command per deletion unnoticed), remove our chains and jumps in one go,
// and leave other software's rules alone.
func TestKernelRestoreRemoval(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	for _, be := range backends {
		for _, v6 := range []bool{false, true} {
			cmd := "iptables-" + be
			if v6 {
				cmd = "ip6tables-" + be
			}
			t.Run(cmd, func(t *testing.T) {
				run(t, cmd, "-t", "nat", "-A", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
				t.Cleanup(func() {
					run(t, cmd, "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
				})
				before := xtablesSave(t, strings.TrimSuffix(cmd, "-"+be), be)
				run(t, cmd, "-t", "nat", "-N", natChain)
				run(t, cmd, "-t", "nat", "-A", natChain, "-p", "tcp", "-m", "comment", "--comment", Comment, "-j", "RETURN")
				run(t, cmd, "-t", "nat", "-I", "OUTPUT", "1", "-m", "comment", "--comment", Comment, "-j", natChain)
				ipt, err := openIPTables(be, v6)
				if err != nil {
					t.Fatal(err)
				}
				st, err := listTable(ipt, "nat")
				if err != nil {
					t.Fatal(err)
				}
				rm := ownedIn(st)
				if err := ipt.(restorer).Restore(rm.restoreInput("nat")); err != nil {
					t.Fatalf("%s-restore refused teardown's input: %v", cmd, err)
				}
				if removed, want := rm.names("nat"), []string{"nat/OUTPUT jump", "nat/" + natChain + " chain"}; !slices.Equal(removed, want) {
					t.Errorf("removed %q, want %q", removed, want)
				}
				if after := xtablesSave(t, strings.TrimSuffix(cmd, "-"+be), be); after != before {
					t.Errorf("after the restore:\n%s\nwant:\n%s", after, before)
				}
			})
		}
	}
}

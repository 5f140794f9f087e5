package netredirect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// withCanaries adds state that belongs to other software and must survive
// everything the package does.
func withCanaries(h *fakeHost) *fakeHost {
	h.links.addLink("eth0", "device", "", true)
	h.links.addAddr("eth0", "192.0.2.10/24", "eth0")
	h.links.addAddr("lo", "169.254.169.253/32", "lo")
	for _, x := range h.ipt {
		x.add("nat", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")
		x.add("filter", "FORWARD", "-s", "10.0.0.0/8", "-j", "DROP")
		x.add("filter", "DOCKER-USER")
		x.add("filter", "FORWARD", "-j", "DOCKER-USER")
	}
	return h
}

func newTestRedirector(t *testing.T, h *fakeHost, cfg Config, obs Observer) *Redirector {
	t.Helper()
	r, err := newRedirector(cfg, Options{Logger: testLogger(t), Observer: obs}, h.system())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func diffState(t *testing.T, what, want, got string) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: host state mismatch (-want +got):\n%s", what, d)
	}
}

const (
	dnatDefault = "-d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination 127.0.0.1:8254"
	fenceLo     = "-i lo -m comment --comment imds-shim -j RETURN"
	fenceDrop   = "-d 169.254.169.254/32 -m comment --comment imds-shim -j DROP"
)

// fakeRules is what the fake lists for the plan of a host-only redirect of
// port to target, IPv4 and IPv6.
func fakeRules(port, target string) (v4, v6 string) {
	v4 = `*filter
-N IMDS-SHIM-INPUT
-A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
-A IMDS-SHIM-INPUT ` + fenceLo + `
-A IMDS-SHIM-INPUT ` + fenceDrop + `
*nat
-N IMDS-SHIM-OUTPUT
-A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
-A IMDS-SHIM-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport ` + port + ` -m comment --comment imds-shim -j DNAT --to-destination ` + target + `
`
	tport := target[strings.LastIndex(target, ":")+1:]
	v6 = `*filter
-N IMDS-SHIM-INPUT
-A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
-A IMDS-SHIM-INPUT ` + fenceLo + `
-A IMDS-SHIM-INPUT -d fd00:ec2::254/128 -m comment --comment imds-shim -j DROP
*nat
-N IMDS-SHIM-OUTPUT
-A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
-A IMDS-SHIM-OUTPUT -d fd00:ec2::254/128 -p tcp -m tcp --dport ` + port + ` -m comment --comment imds-shim -j DNAT --to-destination [fd00:ec2::254]:` + tport + `
`
	return v4, v6
}

var defV4, defV6 = fakeRules("80", "127.0.0.1:8254")

// arpBlock is what the fake arptables-nft holds after Setup.
const arpBlock = `# nft arp
*filter
-N IMDS-SHIM-ARP
-A INPUT -j IMDS-SHIM-ARP
-A IMDS-SHIM-ARP -j DROP -d 169.254.169.254 --opcode 1
`

var altV4, altV6 = fakeRules("8080", "127.0.0.1:9000")

func TestSetupStates(t *testing.T) {
	for _, tc := range []struct {
		name     string
		dummy    bool
		backends []string
		alt      string
		ipv6     error
		cfg      Config
		want     string
	}{{
		name:  "auto link with dummy driver, nft",
		dummy: true, backends: []string{BackendNFT, BackendLegacy},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
link imds0 type dummy alias "imds-shim" up
  inet 169.254.169.254/32 scope 254 label imds0:imds
  inet6 fd00:ec2::254/128 flags 0x2
# nft
` + defV4 + `# nft ip6
` + defV6 + arpBlock + `# legacy
`,
	}, {
		name:  "auto link without dummy driver falls back to lo; alternative says legacy",
		dummy: false, backends: []string{BackendNFT, BackendLegacy}, alt: BackendLegacy,
		cfg: Config{Target: netip.MustParseAddrPort("127.0.0.1:9000"), Port: 8080},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
  inet 169.254.169.254/32 scope 254 label lo:imds
  inet6 fd00:ec2::254/128 flags 0x2
# nft
` + arpBlock + `# legacy
` + altV4 + `# legacy ip6
` + altV6,
	}, {
		name:  "explicit lo and nft, only nft installed",
		dummy: true, backends: []string{BackendNFT},
		cfg: Config{Link: LinkLo, Backend: BackendNFT},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
  inet 169.254.169.254/32 scope 254 label lo:imds
  inet6 fd00:ec2::254/128 flags 0x2
# nft
` + defV4 + `# nft ip6
` + defV6 + arpBlock,
	}, {
		name:  "ipv6 auto on a host without IPv6: IPv4 only, no error",
		dummy: false, backends: []string{BackendNFT}, ipv6: errors.New("no IPv6"),
		cfg: Config{Link: LinkLo},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
  inet 169.254.169.254/32 scope 254 label lo:imds
# nft
` + defV4 + arpBlock,
	}, {
		name:  "ipv6 false",
		dummy: false, backends: []string{BackendNFT},
		cfg: Config{Link: LinkLo, IPv6: IPv6False},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
  inet 169.254.169.254/32 scope 254 label lo:imds
# nft
` + defV4 + arpBlock,
	}, {
		name:  "containers: PREROUTING per bridge, fence accepts them to the listener",
		dummy: false, backends: []string{BackendNFT},
		cfg: Config{Link: LinkLo, Containers: []string{"docker0", "podman0"}, Target: netip.MustParseAddrPort("169.254.169.254:254")},
		want: `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
  inet 169.254.169.254/32 scope 254 label lo:imds
  inet6 fd00:ec2::254/128 flags 0x2
# nft
*filter
-N IMDS-SHIM-INPUT
-A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
-A IMDS-SHIM-INPUT ` + fenceLo + `
-A IMDS-SHIM-INPUT -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 254 -m comment --comment imds-shim -j ACCEPT
-A IMDS-SHIM-INPUT -d 169.254.169.254/32 -i podman0 -p tcp -m tcp --dport 254 -m comment --comment imds-shim -j ACCEPT
-A IMDS-SHIM-INPUT ` + fenceDrop + `
*nat
-N IMDS-SHIM-OUTPUT
-N IMDS-SHIM-PREROUTING
-A PREROUTING -m comment --comment imds-shim -j IMDS-SHIM-PREROUTING
-A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
-A IMDS-SHIM-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination 169.254.169.254:254
-A IMDS-SHIM-PREROUTING -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination 169.254.169.254:254
-A IMDS-SHIM-PREROUTING -d 169.254.169.254/32 -i podman0 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination 169.254.169.254:254
# nft ip6
*filter
-N IMDS-SHIM-INPUT
-A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
-A IMDS-SHIM-INPUT ` + fenceLo + `
-A IMDS-SHIM-INPUT -d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 254 -m comment --comment imds-shim -j ACCEPT
-A IMDS-SHIM-INPUT -d fd00:ec2::254/128 -i podman0 -p tcp -m tcp --dport 254 -m comment --comment imds-shim -j ACCEPT
-A IMDS-SHIM-INPUT -d fd00:ec2::254/128 -m comment --comment imds-shim -j DROP
*nat
-N IMDS-SHIM-OUTPUT
-N IMDS-SHIM-PREROUTING
-A PREROUTING -m comment --comment imds-shim -j IMDS-SHIM-PREROUTING
-A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
-A IMDS-SHIM-OUTPUT -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination [fd00:ec2::254]:254
-A IMDS-SHIM-PREROUTING -d fd00:ec2::254/128 -i docker0 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination [fd00:ec2::254]:254
-A IMDS-SHIM-PREROUTING -d fd00:ec2::254/128 -i podman0 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination [fd00:ec2::254]:254
` + arpBlock,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(tc.dummy, tc.backends...)
			if tc.alt != "" {
				h.alternative = tc.alt
			}
			h.ipv6 = tc.ipv6
			r := newTestRedirector(t, h, tc.cfg, nil)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			diffState(t, "after Setup", tc.want, h.String())
			if len(r.changes) == 0 {
				t.Error("the first Setup recorded no changes")
			}
			// A second Setup, by this Redirector and by a fresh one (a
			// restart), must find everything in place and change nothing.
			for _, again := range []*Redirector{r, newTestRedirector(t, h, tc.cfg, nil)} {
				if err := again.Setup(t.Context()); err != nil {
					t.Fatal(err)
				}
				if len(again.changes) != 0 {
					t.Errorf("a second Setup changed %q", again.changes)
				}
				diffState(t, "after a second Setup", tc.want, h.String())
			}
			wantV6 := tc.ipv6 == nil && tc.cfg.IPv6 != IPv6False
			if got := r.IPv6Active(); got != wantV6 {
				t.Errorf("IPv6Active = %t, want %t", got, wantV6)
			}
			if got, want := r.Listeners(), r.Config().Listeners(wantV6); !slices.Equal(got, want) || len(got) != map[bool]int{false: 1, true: 2}[wantV6] {
				t.Errorf("Listeners = %v, want %v", got, want)
			}
		})
	}
}

func TestSetupTeardownLeaveForeignState(t *testing.T) {
	for _, dummy := range []bool{true, false} {
		h := withCanaries(newFakeHost(dummy, BackendNFT, BackendLegacy))
		before := h.String()
		r := newTestRedirector(t, h, Config{}, nil)
		if err := r.Teardown(t.Context()); err != nil {
			t.Fatalf("Teardown before Setup: %v", err)
		}
		diffState(t, "Teardown before Setup", before, h.String())
		for range 2 {
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		setUp := h.String()
		if !strings.Contains(setUp, "canary value") || !strings.Contains(setUp, "IMDS-SHIM-OUTPUT") {
			t.Fatalf("state after Setup lacks the canary or our chain:\n%s", setUp)
		}
		for i := range 2 {
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatalf("Teardown #%d: %v", i+1, err)
			}
			diffState(t, "after Teardown", before, h.String())
		}
	}
}

// TestSetupFailureRollsBack breaks Setup at every call it makes, in turn:
// each failed Setup must leave the host exactly as it was, and a Teardown
// after it must succeed and change nothing.
func TestSetupFailureRollsBack(t *testing.T) {
	for _, dummy := range []bool{true, false} {
		failures := 0
		for n := 1; ; n++ {
			h := withCanaries(newFakeHost(dummy, BackendNFT, BackendLegacy))
			before := h.String()
			h.faults.failAt = n + h.faults.calls
			r := newTestRedirector(t, h, Config{}, nil)
			err := r.Setup(t.Context())
			h.faults.failAt = 0
			if err == nil {
				break
			}
			if !errors.Is(err, errInjected) {
				t.Fatalf("failing call %d: Setup error %v does not wrap the injected failure", n, err)
			}
			failures++
			diffState(t, "after a Setup failing at call "+strconv.Itoa(n), before, h.String())
			if err := r.Teardown(t.Context()); err != nil {
				t.Errorf("Teardown after a Setup failing at call %d: %v", n, err)
			}
			diffState(t, "after Teardown following a failed Setup", before, h.String())
			if n > 200 {
				t.Fatal("Setup never succeeded")
			}
		}
		if failures < 10 {
			t.Errorf("only %d injected failures exercised; the fault injection is not reaching Setup", failures)
		}
	}
}

// TestSetupFailureKeepsWhatItFound checks that a failing Setup removes only
// what it added: the leftovers it found and would have reused stay.
func TestSetupFailureKeepsWhatItFound(t *testing.T) {
	leftovers := func() *fakeHost {
		h := withCanaries(newFakeHost(false, BackendNFT))
		if err := newTestRedirector(t, h, Config{Link: LinkLo}, nil).Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := h.ipt[BackendNFT].Delete("filter", "INPUT", "-m", "comment", "--comment", Comment, "-j", fenceChain); err != nil {
			t.Fatal(err)
		}
		return h
	}
	want := leftovers().String()
	for n := 1; n < 100; n++ {
		h := leftovers()
		h.faults.failAt = h.faults.calls + n
		err := newTestRedirector(t, h, Config{Link: LinkLo}, nil).Setup(t.Context())
		h.faults.failAt = 0
		if err == nil {
			return
		}
		diffState(t, "after a Setup over leftovers failing at call "+strconv.Itoa(n), want, h.String())
	}
	t.Fatal("Setup never succeeded")
}

func TestSetupConvergesAfterTargetChange(t *testing.T) {
	old := Config{Link: LinkLo, Target: netip.MustParseAddrPort("127.0.0.1:8254")}
	cur := Config{Link: LinkLo, Target: netip.MustParseAddrPort("127.0.0.1:9999")}

	fresh := withCanaries(newFakeHost(false, BackendNFT, BackendLegacy))
	if err := newTestRedirector(t, fresh, cur, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := fresh.String()

	h := withCanaries(newFakeHost(false, BackendNFT, BackendLegacy))
	if err := newTestRedirector(t, h, old, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Make it worse: a duplicate jump, a stale jump variant, a stray rule in
	// our chain and a chain of ours that is no longer planned.
	// Duplicates of our own come from racing starts, which insert first.
	nft := h.ipt[BackendNFT]
	if err := nft.Insert("nat", "OUTPUT", 1, "-m", "comment", "--comment", Comment, "-j", natChain); err != nil {
		t.Fatal(err)
	}
	nft.add("nat", "OUTPUT", "-d", "169.254.169.254/32", "-j", natChain)
	nft.add("nat", natChain, "-j", "RETURN")
	nft.add("nat", ChainPrefix+"PREROUTING")
	nft.add("nat", "PREROUTING", "-j", ChainPrefix+"PREROUTING")

	if err := newTestRedirector(t, h, cur, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "after Setup with a new target over old rules", want, h.String())
	if strings.Contains(h.String(), "8254") {
		t.Errorf("the old target survived:\n%s", h)
	}
}

func TestSetupConvergesAfterAddrChange(t *testing.T) {
	h := withCanaries(newFakeHost(false, BackendNFT))
	before := h.String()
	if err := newTestRedirector(t, h, Config{Link: LinkLo, Addr: netip.MustParseAddr("169.254.170.2")}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := newTestRedirector(t, h, Config{Link: LinkLo}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.links.String(); strings.Contains(got, "169.254.170.2") || !strings.Contains(got, "169.254.169.254/32 scope 254 label lo:imds") {
		t.Errorf("addresses after the Addr change:\n%s", got)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "after Teardown", before, h.String())
}

func TestSetupPurgesOtherBackend(t *testing.T) {
	h := withCanaries(newFakeHost(false, BackendNFT, BackendLegacy))
	legacyBefore := h.ipt[BackendLegacy].String()
	if err := newTestRedirector(t, h, Config{Backend: BackendLegacy}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := newTestRedirector(t, h, Config{Backend: BackendNFT}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "legacy after switching to nft", legacyBefore, h.ipt[BackendLegacy].String())
}

func TestCleanupRemovesOnlyOurs(t *testing.T) {
	h := withCanaries(newFakeHost(true, BackendNFT, BackendLegacy))
	// Foreign things that look a bit like ours.
	h.links.addLink("imds1", "dummy", "someone-else", true)
	h.links.addAddr("eth0", "169.254.169.254/32", "eth0")
	h.links.addAddr("lo", "169.254.169.252/32", "lo:other")
	h.ipt[BackendNFT].add("nat", "SHIM-OUTPUT", "-m", "comment", "--comment", Comment, "-j", "RETURN")
	before := h.String()

	if err := cleanup(t.Context(), testLogger(t), h.system()); err != nil {
		t.Fatalf("Cleanup with nothing of ours: %v", err)
	}
	diffState(t, "Cleanup with nothing of ours", before, h.String())

	// Leftovers of crashed runs: a dummy link in one, lo and nft in another,
	// legacy in a third, plus an old target.
	if err := newTestRedirector(t, h, Config{}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.links.addAddr("lo", "169.254.169.254/32", "lo:imds")
	h.links.addAddr("eth0", "169.254.169.251/32", "eth0:imds")
	legacy := h.ipt[BackendLegacy]
	legacy.add("nat", natChain, "-d", "169.254.169.254/32", "-p", "tcp", "-j", "DNAT", "--to-destination", "127.0.0.1:1234")
	legacy.add("nat", "OUTPUT", "-j", natChain)
	legacy.add("nat", "OUTPUT", "-m", "comment", "--comment", Comment, "-j", natChain)
	legacy.add("filter", ChainPrefix+"INPUT")
	h.ipt[BackendNFT].add("nat", "OUTPUT", "-j", natChain) // a second, different jump
	if err := cleanup(t.Context(), testLogger(t), h.system()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	diffState(t, "after Cleanup", before, h.String())
	if err := cleanup(t.Context(), testLogger(t), h.system()); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	diffState(t, "after a second Cleanup", before, h.String())
}

func TestCleanupContinuesPastErrors(t *testing.T) {
	h := newFakeHost(true, BackendNFT, BackendLegacy)
	if err := newTestRedirector(t, h, Config{Backend: BackendNFT}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Call 1 asks whether nft's ip6 filter table is present, call 2 lists it.
	h.faults.failAt = h.faults.calls + 2
	err := cleanup(t.Context(), testLogger(t), h.system())
	if !errors.Is(err, errInjected) {
		t.Fatalf("Cleanup error = %v, want the injected failure", err)
	}
	want := `link lo type device alias "" up
  inet 127.0.0.1/8 scope 0 label lo
# nft
# nft ip6
` + defV6[:strings.Index(defV6, "*nat")] + `# legacy
`
	diffState(t, "after a Cleanup that could not list nft/filter", want, h.String())
	if err := cleanup(t.Context(), testLogger(t), h.system()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "after a second Cleanup", newFakeHost(true, BackendNFT, BackendLegacy).String(), h.String())
}

func TestAddressOfAdministratorIsKept(t *testing.T) {
	h := newFakeHost(false, BackendNFT)
	h.links.addAddr("lo", "169.254.169.254/32", "lo")
	before := h.links.String()
	r := newTestRedirector(t, h, Config{Link: LinkLo}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := r.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !st.AddrPresent || st.AddrOwned || !st.OK() {
		t.Errorf("status = %+v, want the address present, not owned, and OK", st)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := cleanup(t.Context(), testLogger(t), h.system()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "links after Teardown and Cleanup", before, h.links.String())
}

func TestDummyModeRefusesForeignLink(t *testing.T) {
	h := newFakeHost(true, BackendNFT)
	h.links.addLink("imds0", "dummy", "", true)
	before := h.String()
	r := newTestRedirector(t, h, Config{Link: LinkDummy}, nil)
	err := r.Setup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "not ours") {
		t.Fatalf("Setup on someone else's imds0 = %v, want a refusal", err)
	}
	diffState(t, "after the refused Setup", before, h.String())
	// auto mode stays off it and uses lo.
	r = newTestRedirector(t, h, Config{}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.links.String(), "label lo:imds") {
		t.Errorf("auto mode did not fall back to lo:\n%s", h.links)
	}
}

func TestDummyUnsupportedInDummyMode(t *testing.T) {
	h := newFakeHost(false, BackendNFT)
	before := h.String()
	err := newTestRedirector(t, h, Config{Link: LinkDummy}, nil).Setup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "creating dummy link imds0") {
		t.Fatalf("Setup = %v, want a dummy link creation error", err)
	}
	diffState(t, "after the failed Setup", before, h.String())
}

func TestExistingLinkIsNeverDeleted(t *testing.T) {
	h := newFakeHost(false, BackendNFT)
	h.links.addLink("veth1", "veth", "", true)
	before := h.String()
	r := newTestRedirector(t, h, Config{Link: "veth1"}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.links.String(), "169.254.169.254/32 scope 254 label veth1:imds") {
		t.Errorf("address not on veth1:\n%s", h.links)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "after Teardown", before, h.String())

	// A missing link is an error that changes nothing.
	r = newTestRedirector(t, h, Config{Link: "veth9"}, nil)
	if err := r.Setup(t.Context()); err == nil || !errors.Is(err, errLinkNotFound) {
		t.Fatalf("Setup on a missing link = %v, want errLinkNotFound", err)
	}
	diffState(t, "after Setup on a missing link", before, h.String())
}

func TestPickBackend(t *testing.T) {
	for _, tc := range []struct {
		counts map[string]int
		alt    string
		want   string
	}{
		{map[string]int{}, BackendNFT, ""},
		{map[string]int{BackendNFT: 0}, BackendLegacy, BackendNFT},
		{map[string]int{BackendLegacy: 0}, BackendNFT, BackendLegacy},
		{map[string]int{BackendNFT: 0, BackendLegacy: 0}, BackendLegacy, BackendLegacy},
		{map[string]int{BackendNFT: 0, BackendLegacy: 0}, BackendNFT, BackendNFT},
		{map[string]int{BackendNFT: 0, BackendLegacy: 0}, "", BackendNFT},
		{map[string]int{BackendNFT: 3, BackendLegacy: 40}, BackendNFT, BackendLegacy},
		{map[string]int{BackendNFT: 12, BackendLegacy: 1}, BackendLegacy, BackendNFT},
	} {
		if got := pickBackend(tc.counts, tc.alt); got != tc.want {
			t.Errorf("pickBackend(%v, %q) = %q, want %q", tc.counts, tc.alt, got, tc.want)
		}
	}
}

func TestDetectBackendIgnoresOurRulesAndDoesNotTouchLegacy(t *testing.T) {
	h := newFakeHost(false, BackendNFT, BackendLegacy)
	h.alternative = BackendNFT
	// Legacy tables do not exist: detection must not create them.
	r := newTestRedirector(t, h, Config{}, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.ipt[BackendLegacy].String(); got != "" {
		t.Errorf("detection instantiated legacy tables:\n%s", got)
	}
	// Our own leftovers in legacy are not "the host's rules"; a single
	// foreign rule there is.
	h2 := newFakeHost(false, BackendNFT, BackendLegacy)
	if err := newTestRedirector(t, h2, Config{Backend: BackendLegacy}, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, _, err := detectBackend(h2.system(), testLogger(t))
	if err != nil || b != BackendNFT {
		t.Errorf("detectBackend with only our rules in legacy = %q, %v; want nft", b, err)
	}
	h2.ipt[BackendLegacy].add("filter", "INPUT", "-j", "ACCEPT")
	b, _, err = detectBackend(h2.system(), testLogger(t))
	if err != nil || b != BackendLegacy {
		t.Errorf("detectBackend with a foreign legacy rule = %q, %v; want legacy", b, err)
	}
	// kubelet's hint: an empty chain in mangle outweighs nothing at all.
	h4 := newFakeHost(false, BackendNFT, BackendLegacy)
	h4.alternative = BackendLegacy
	h4.ipt[BackendNFT].add("mangle", "KUBE-IPTABLES-HINT")
	if b, _, err = detectBackend(h4.system(), testLogger(t)); err != nil || b != BackendNFT {
		t.Errorf("detectBackend with kubelet's hint in nft = %q, %v; want nft", b, err)
	}
	h3 := newFakeHost(false)
	if _, _, err := detectBackend(h3.system(), testLogger(t)); !errors.Is(err, errNoBackend) {
		t.Errorf("detectBackend with no iptables = %v, want errNoBackend", err)
	}
}

// recorder is an Observer that hands repairs to the test.
type recorder struct{ ch chan string }

func (o recorder) Repaired(what string) { o.ch <- what }

// waitRepairs collects repairs until want has been seen, failing after a
// generous bound (the run is driven by the test, so this never waits on a
// real clock in the passing case).
func waitRepairs(t *testing.T, o recorder, want ...string) {
	t.Helper()
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for {
		missing := false
		for _, w := range want {
			missing = missing || !got[w]
		}
		if !missing {
			return
		}
		select {
		case w := <-o.ch:
			got[w] = true
		case <-timeout:
			t.Fatalf("repairs seen %v, want %v", got, want)
		}
	}
}

func TestRunRepairs(t *testing.T) {
	h := withCanaries(newFakeHost(true, BackendNFT, BackendLegacy))
	before := h.String()
	obs := recorder{ch: make(chan string, 100)}
	r := newTestRedirector(t, h, Config{}, obs)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := h.String()
	stop := runInBackground(t, r)

	// Steady state: several ticks on an intact host repair nothing. Run
	// takes a tick only after the reconcile of the previous one, so the
	// last send returns once the others are done.
	for range 6 {
		h.tick <- time.Now()
	}
	select {
	case w := <-obs.ch:
		t.Fatalf("steady state: Run repaired %q on an intact host", w)
	default:
	}
	diffState(t, "after ticks on an intact host", want, h.String())

	// The address is repaired on the netlink event alone, with no tick.
	h.links.delAddr("imds0", "169.254.169.254/32")
	waitRepairs(t, obs, "address 169.254.169.254/32 on imds0")
	diffState(t, "after the address was removed", want, h.String())

	// A deleted dummy link too.
	if err := h.links.LinkDel(mustLink(t, h, "imds0")); err != nil {
		t.Fatal(err)
	}
	waitRepairs(t, obs, "address 169.254.169.254/32 on imds0")
	if !strings.Contains(h.links.String(), `link imds0 type dummy alias "imds-shim" up`) {
		t.Errorf("dummy link not recreated:\n%s", h.links)
	}

	// Rules have no events: a flushed nat OUTPUT is repaired on the tick.
	h.ipt[BackendNFT].flush("nat", "OUTPUT")
	h.tick <- time.Now()
	waitRepairs(t, obs, "nat/OUTPUT jump")
	// The flush took the canary too; its owner puts it back (after our jump).
	h.ipt[BackendNFT].add("nat", "OUTPUT", "-m", "comment", "--comment", "canary value", "-j", "ACCEPT")

	// A deleted chain (its jump first, as iptables requires).
	nft := h.ipt[BackendNFT]
	if err := nft.Delete("filter", "INPUT", "-m", "comment", "--comment", Comment, "-j", fenceChain); err != nil {
		t.Fatal(err)
	}
	if err := nft.ClearAndDeleteChain("filter", fenceChain); err != nil {
		t.Fatal(err)
	}
	h.tick <- time.Now()
	waitRepairs(t, obs, "filter/INPUT jump", "filter/"+fenceChain+" chain", "filter/"+fenceChain+" rules")
	diffState(t, "after the repairs", want, h.String())

	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	diffState(t, "after Teardown", before, h.String())
}

func TestRunStopsRepairingAfterTeardown(t *testing.T) {
	h := newFakeHost(false, BackendNFT)
	before := h.String()
	obs := recorder{ch: make(chan string, 100)}
	r := newTestRedirector(t, h, Config{}, obs)
	if err := r.Run(t.Context()); err == nil {
		t.Fatal("Run before Setup succeeded")
	}
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop := runInBackground(t, r)
	h.tick <- time.Now() // Run is in its loop once the tick is taken
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.tick <- time.Now() // a reconcile after Teardown must not reinstall
	_ = stop()
	diffState(t, "after Teardown with Run active", before, h.String())
	select {
	case w := <-obs.ch:
		t.Errorf("unexpected repair %q", w)
	default:
	}
}

func TestStatus(t *testing.T) {
	h := newFakeHost(false, BackendNFT, BackendLegacy)
	cfg := Config{Link: LinkLo}
	fresh := newTestRedirector(t, h, cfg, nil)
	st, err := fresh.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.OK() || st.AddrPresent || st.Rules[0].Present || st.Backend != BackendNFT || st.Link != "lo" {
		t.Errorf("status before Setup:\n%s", st)
	}
	if err := newTestRedirector(t, h, cfg, nil).Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st, err = fresh.Status(t.Context()); err != nil || !st.OK() {
		t.Errorf("status after Setup (err %v):\n%s", err, st)
	}
	h.ipt[BackendNFT].add("nat", "OUTPUT", "-j", natChain)
	h.ipt[BackendLegacy].add("nat", natChain)
	h.ipt[BackendNFT].flush("filter", fenceChain)
	st, err = fresh.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := `backend: iptables-nft
ok      link lo
ok      address 169.254.169.254/32 on lo
ok      address fd00:ec2::254/128 on lo
containers: none (host processes only)
listeners: 127.0.0.1:8254, [fd00:ec2::254]:8254
ok      nat: -A IMDS-SHIM-OUTPUT ` + dnatDefault + `
ok      nat: -A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
MISSING filter: -A IMDS-SHIM-INPUT ` + fenceLo + `
MISSING filter: -A IMDS-SHIM-INPUT ` + fenceDrop + `
ok      filter: -A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
ok      ip6 nat: -A IMDS-SHIM-OUTPUT -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination [fd00:ec2::254]:8254
ok      ip6 nat: -A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT
ok      ip6 filter: -A IMDS-SHIM-INPUT ` + fenceLo + `
ok      ip6 filter: -A IMDS-SHIM-INPUT -d fd00:ec2::254/128 -m comment --comment imds-shim -j DROP
ok      ip6 filter: -A INPUT -m comment --comment imds-shim -j IMDS-SHIM-INPUT
ok      arp filter: -A IMDS-SHIM-ARP -j DROP -d 169.254.169.254 --opcode 1
ok      arp filter: -A INPUT -j IMDS-SHIM-ARP
STALE   nat: -A OUTPUT -j IMDS-SHIM-OUTPUT
LEFTOVER legacy nat: -N IMDS-SHIM-OUTPUT
`
	if d := cmp.Diff(want, st.String()); d != "" || st.OK() {
		t.Errorf("status (-want +got):\n%s", d)
	}
}

func mustLink(t *testing.T, h *fakeHost, name string) netlink.Link {
	t.Helper()
	l, err := h.links.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestIPv6TrueWithoutIPv6FailsAndChangesNothing(t *testing.T) {
	h := withCanaries(newFakeHost(true, BackendNFT))
	h.ipv6 = errors.New("IPv6 is disabled (net.ipv6.conf.all.disable_ipv6=1)")
	before := h.String()
	err := newTestRedirector(t, h, Config{IPv6: IPv6True}, nil).Setup(t.Context())
	if err == nil || !strings.Contains(err.Error(), "disable_ipv6") {
		t.Fatalf("Setup = %v, want an error saying IPv6 is disabled", err)
	}
	diffState(t, "after the refused Setup", before, h.String())
}

func TestContainersSetupTeardown(t *testing.T) {
	h := withCanaries(newFakeHost(true, BackendNFT, BackendLegacy))
	// An older version's FORWARD chain is a stale chain of ours.
	h.ipt[BackendNFT].add("filter", oldFilterChain, "-d", "169.254.169.254/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", Comment, "-j", "ACCEPT")
	h.ipt[BackendNFT].add("filter", "FORWARD", "-m", "comment", "--comment", Comment, "-j", oldFilterChain)
	cfg := Config{Containers: []string{"docker0"}, Target: netip.MustParseAddrPort("169.254.169.254:254")}
	r := newTestRedirector(t, h, cfg, nil)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.String(); strings.Contains(got, oldFilterChain) || !strings.Contains(got, "-A IMDS-SHIM-PREROUTING -d 169.254.169.254/32 -i docker0") {
		t.Errorf("after Setup:\n%s", got)
	}
	st, err := r.Status(t.Context())
	if err != nil || !st.OK() || !st.ARP || !slices.Equal(st.Containers, []string{"docker0"}) {
		t.Errorf("Status (err %v):\n%s", err, st)
	}
	if !strings.Contains(st.String(), "ok      nat: -A IMDS-SHIM-PREROUTING -d 169.254.169.254/32 -i docker0") ||
		!strings.Contains(st.String(), "ok      filter: -A IMDS-SHIM-INPUT -d 169.254.169.254/32 -i docker0 -p tcp -m tcp --dport 254") {
		t.Errorf("status does not show the bridge rules and the fence:\n%s", st)
	}
	if err := r.Teardown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.String(); strings.Contains(got, ChainPrefix) || strings.Contains(got, "fd00:ec2::254") || strings.Contains(got, "imds0") {
		t.Errorf("after Teardown:\n%s", got)
	}
}

// Teardown removes each table's rules and chains of ours with one restore
// transaction (a command per deletion made a stop take a third of a
// second); when the restore fails, a command per change still removes all
// of it. Other software's rules stay either way.
func TestTeardownOneRestorePerTable(t *testing.T) {
	for _, restoreFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("restore fails %v", restoreFails), func(t *testing.T) {
			h := withCanaries(newFakeHost(false, BackendNFT))
			before := h.String()
			r := newTestRedirector(t, h, Config{Backend: BackendNFT}, nil)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			v4, v6 := h.ipt[BackendNFT], h.ipt6[BackendNFT]
			if restoreFails {
				v4.restoreErr = errors.New("iptables-restore: line 2 failed")
				v6.restoreErr = v4.restoreErr
			}
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatal(err)
			}
			diffState(t, "after Teardown", before, h.String())
			if got := [2]int{v4.restores, v6.restores}; got != [2]int{2, 2} {
				t.Errorf("restores (IPv4, IPv6) = %v, want one per table of each: [2 2]", got)
			}
		})
	}
}

// With the nft backend, Run repairs on a ruleset change at once, with no
// tick; when the change subscription fails it checks once (changes may have
// been missed) and subscribes again on the next tick.
func TestRunRepairsOnRuleChange(t *testing.T) {
	h := newFakeHost(true, BackendNFT)
	h.ruleChanges = make(chan bool)
	obs := recorder{ch: make(chan string, 100)}
	r := newTestRedirector(t, h, Config{}, obs)
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := h.String()
	stop := runInBackground(t, r)

	// Repaired by the check Run makes on subscribing or by the change.
	h.ipt[BackendNFT].flush("nat", "OUTPUT")
	change(t, h, true)
	waitRepairs(t, obs, "nat/OUTPUT jump")
	diffState(t, "after the change event", want, h.String())

	// From here on only changes trigger checks (no tick is sent): a
	// burst of them; then our own repair's commit, whose check finds
	// nothing to do.
	h.ipt6[BackendNFT].flush("nat", "OUTPUT")
	for range 3 {
		change(t, h, true)
	}
	waitRepairs(t, obs, "ip6 nat/OUTPUT jump")
	change(t, h, true) // the repair's own commit

	// The subscription fails after a change it did not report.
	h.ipt[BackendNFT].flush("nat", "OUTPUT")
	change(t, h, false)
	waitRepairs(t, obs, "nat/OUTPUT jump")
	if n := h.nftSubscribed.Load(); n != 1 {
		t.Errorf("%d subscriptions before the next tick, want 1", n)
	}
	h.tick <- time.Now()
	h.tick <- time.Now() // returns once the first tick's loop, which subscribes, is done
	if n := h.nftSubscribed.Load(); n != 2 {
		t.Errorf("%d subscriptions after a tick, want 2", n)
	}
	h.ipt[BackendNFT].flush("nat", "OUTPUT")
	change(t, h, true)
	waitRepairs(t, obs, "nat/OUTPUT jump")
	select {
	case w := <-obs.ch:
		t.Errorf("repaired %q more than once", w)
	default:
	}
	diffState(t, "after the repairs", want, h.String())
	_ = stop()
}

// runInBackground starts r.Run; stop cancels it and returns what Run
// returned.
func runInBackground(t *testing.T, r *Redirector) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = r.Run(ctx) })
	return func() error {
		cancel()
		wg.Wait()
		return err
	}
}

// change sends a ruleset change event (ok) or a failed receive (!ok) to
// Run's subscription.
func change(t *testing.T, h *fakeHost, ok bool) {
	t.Helper()
	select {
	case h.ruleChanges <- ok:
	case <-time.After(10 * time.Second):
		t.Fatal("Run is not subscribed to ruleset changes")
	}
}

// The legacy backend has no change events: Run does not subscribe.
func TestRunLegacyHasNoRuleEvents(t *testing.T) {
	h := newFakeHost(true, BackendLegacy)
	h.alternative = BackendLegacy
	h.ruleChanges = make(chan bool)
	r := newTestRedirector(t, h, Config{}, recorder{ch: make(chan string, 100)})
	if err := r.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop := runInBackground(t, r)
	h.tick <- time.Now()
	h.tick <- time.Now()
	_ = stop()
	if n := h.nftSubscribed.Load(); n != 0 {
		t.Errorf("subscribed to nftables changes %d times with the legacy backend", n)
	}
}

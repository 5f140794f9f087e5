package netredirect

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"default", Config{}},
		{"lo-legacy-custom", Config{Link: LinkLo, Backend: BackendLegacy, Port: 8080,
			Target: netip.MustParseAddrPort("169.254.169.254:8254"), ReconcileInterval: 30 * time.Second}},
		{"existing-link-nft", Config{Link: "br0", Backend: BackendNFT, Addr: netip.MustParseAddr("169.254.170.2"),
			Target: netip.MustParseAddrPort("127.0.0.1:51679")}},
		{"dummy-named", Config{Link: LinkDummy, DummyName: "meta0"}},
		{"containers", Config{Containers: []string{"docker0", "podman0"}, Target: netip.MustParseAddrPort("169.254.169.254:254")}},
		{"containers-host-target-no-ipv6", Config{Containers: []string{"docker0"}, IPv6: IPv6False,
			Target: netip.MustParseAddrPort("10.1.2.3:8254")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			got := tc.cfg.Render()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if d := cmp.Diff(string(want), got); d != "" {
				t.Errorf("Render mismatch (-want +got), run `go test ./pkg/netredirect -run TestRenderGolden -update` if intended:\n%s", d)
			}
		})
	}
}

// TestFakeCanonicalises checks that the fake stores a rule as iptables
// prints it, so a non-canonical spec in the plan shows up in unit tests as
// churn (a rule that never looks installed) instead of only on a real host.
// TestKernelPlanIsWhatIptablesPrints holds the plan to real iptables.
func TestFakeCanonicalises(t *testing.T) {
	for _, tc := range []struct {
		v6         bool
		spec, want string
	}{
		{false, "-p tcp --dport 80 -d 169.254.169.254 -i br0 -m comment --comment imds-shim -j DNAT --to-destination 10.0.0.1:80",
			"-d 169.254.169.254/32 -i br0 -p tcp -m tcp --dport 80 -m comment --comment imds-shim -j DNAT --to-destination 10.0.0.1:80"},
		{true, "-d fd00:ec2:0::254 -m comment --comment x -j DROP", "-d fd00:ec2::254/128 -m comment --comment x -j DROP"},
		{false, "-s 10.1.2.3/8 -j ACCEPT", "-s 10.0.0.0/8 -j ACCEPT"},
	} {
		x := newFakeIPTables(false, tc.v6, nil)
		words, _ := splitArgs(tc.spec)
		if err := x.Append("nat", "OUTPUT", words...); err != nil {
			t.Fatal(err)
		}
		lines, _ := x.ListTable("nat")
		if got := lines[len(lines)-1]; got != "-A OUTPUT "+tc.want {
			t.Errorf("fake lists %q as %q, want %q", tc.spec, got, "-A OUTPUT "+tc.want)
		}
	}
	if err := newFakeIPTables(false, false, nil).Append("nat", "OUTPUT", "--frobnicate", "-j", "ACCEPT"); err == nil {
		t.Error("the fake accepted an option it cannot canonicalise")
	}
}

// TestSteadyStateOnFake: every Plan variant, installed in the fake, is
// found in place by a second Setup. A plan spec that iptables would print
// differently fails here.
func TestSteadyStateOnFake(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Containers: []string{"docker0", "br-1234abcd"}, Target: netip.MustParseAddrPort("169.254.169.254:254")},
		{Containers: []string{"docker0"}, Target: netip.MustParseAddrPort("10.1.2.3:8254"), IPv6: IPv6True},
	} {
		h := newFakeHost(false, BackendNFT)
		if err := newTestRedirector(t, h, cfg, nil).Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := newTestRedirector(t, h, cfg, nil)
		if err := r.Setup(t.Context()); err != nil {
			t.Fatal(err)
		}
		if len(r.changes) != 0 {
			t.Errorf("%+v: a second Setup changed %q", cfg, r.changes)
		}
	}
}

func TestSplitJoinArgs(t *testing.T) {
	for _, words := range [][]string{
		{"-m", "comment", "--comment", "canary value", "-j", "ACCEPT"},
		{"--comment", `a "quoted" \ word`},
		{"--comment", "", "-j", "X"},
		{"-d", "169.254.169.254/32"},
	} {
		line := joinArgs(words)
		back, err := splitArgs(line)
		if err != nil {
			t.Fatalf("splitArgs(%q): %v", line, err)
		}
		if d := cmp.Diff(words, back); d != "" {
			t.Errorf("round trip through %q (-want +got):\n%s", line, d)
		}
	}
	// As iptables 1.8.9 prints it (checked on both backends).
	if got := joinArgs([]string{"--comment", `a b"c`}); got != `--comment "a b\"c"` {
		t.Errorf("joinArgs = %s", got)
	}
	if _, err := splitArgs(`-m comment --comment "open`); err == nil {
		t.Error("splitArgs accepted an unterminated quote")
	}
}

func TestParseTable(t *testing.T) {
	st, err := parseTable([]string{
		"-P OUTPUT ACCEPT", "-N IMDS-SHIM-OUTPUT", "-N DOCKER",
		"-A OUTPUT -m comment --comment imds-shim -j IMDS-SHIM-OUTPUT",
		`-A OUTPUT -m comment --comment "x -j IMDS-SHIM-OUTPUT" -j DOCKER`,
		"-A IMDS-SHIM-OUTPUT -j RETURN", "",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !st.hasChain("DOCKER") || st.hasChain("INPUT") || len(st.rules["OUTPUT"]) != 2 {
		t.Errorf("parseTable = %+v", st)
	}
	if got := jumpTarget(st.rules["OUTPUT"][1]); got != "DOCKER" {
		t.Errorf("jumpTarget through a quoted comment = %q, want DOCKER", got)
	}
	if _, err := parseTable([]string{"garbage"}); err == nil {
		t.Error("parseTable accepted garbage")
	}
}

func TestValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := DefaultConfig(); got.Addr != defaultAddr || got.Port != 80 || got.Link != LinkAuto ||
		got.DummyName != "imds0" || got.Target != defaultTarget || got.Backend != BackendAuto || got.ReconcileInterval != 10*time.Second {
		t.Errorf("DefaultConfig() = %+v", got)
	}
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{Addr: netip.MustParseAddr("fd00:ec2::254")}, []string{"addr: fd00:ec2::254 is not an IPv4 address"}},
		{Config{Addr: netip.MustParseAddr("127.0.0.5")}, []string{"addr: 127.0.0.5 cannot be claimed"}},
		{Config{Target: netip.MustParseAddrPort("127.0.0.1:0")}, []string{"target: 127.0.0.1:0 has port 0"}},
		{Config{Target: netip.MustParseAddrPort("[::1]:80")}, []string{"target: [::1]:80 is not an IPv4"}},
		{Config{Target: netip.MustParseAddrPort("169.254.169.254:80")}, []string{"DNAT would loop"}},
		{Config{Backend: "nftables"}, []string{`backend: "nftables" must be auto, nft or legacy`}},
		{Config{Link: "eth/0"}, []string{"link: must be auto, dummy, lo or a link name"}},
		{Config{Link: "enx0123456789a"}, []string{`ownership label "enx0123456789a:imds" must fit in 15 bytes`}},
		{Config{DummyName: "a:b"}, []string{"dummy name:"}},
		{Config{ReconcileInterval: -time.Second}, []string{"reconcile interval: -1s is negative"}},
		{Config{Backend: "x", Link: "a b", ReconcileInterval: -1}, []string{"backend:", "link:", "reconcile interval:"}},
		{Config{IPv6: "yes"}, []string{`ipv6: "yes" must be auto, true or false`}},
		{Config{Target: netip.MustParseAddrPort("127.0.0.1:80")}, []string{"ipv6: the IPv6 redirect would send [fd00:ec2::254]:80 to itself"}},
		{Config{Containers: []string{"docker0", "lo", "docker0", "a/b", "averyveryverylongname"}, Target: netip.MustParseAddrPort("169.254.169.254:254")},
			[]string{"containers[1]: lo is not a bridge", `containers[2]: "docker0" is listed twice`, "containers[3]:", "containers[4]:"}},
		{Config{Containers: []string{"docker0"}}, []string{"target: 127.0.0.1:8254: containers cannot reach a loopback target"}},
	} {
		err := tc.cfg.Validate()
		if err == nil {
			t.Errorf("Validate(%+v) = nil, want %q", tc.cfg, tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%+v) = %q, want it to contain %q", tc.cfg, err, w)
			}
		}
		if _, nerr := New(tc.cfg, Options{}); nerr == nil {
			t.Errorf("New accepted %+v", tc.cfg)
		}
	}
	// The integrator maps this one to the YAML key imds.listen.
	if err := (Config{Containers: []string{"docker0"}}).Validate(); !errors.Is(err, ErrLoopbackTarget) {
		t.Errorf("Validate with containers and a loopback target = %v, want ErrLoopbackTarget", err)
	}
	for _, ok := range []Config{
		{Containers: []string{"docker0"}, Target: netip.MustParseAddrPort("169.254.169.254:254")},
		{Target: netip.MustParseAddrPort("127.0.0.1:80"), IPv6: IPv6False},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
}

package imds

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseDefaultRouteIface(t *testing.T) {
	const hdr = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	for _, tc := range []struct {
		name, table, want string
	}{
		{"one default", hdr +
			"eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
			"eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n", "eth0"},
		{"lowest metric wins", hdr +
			"wlan0\t00000000\t0102A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
			"enp3s0\t00000000\t010010AC\t0003\t0\t0\t100\t00000000\t0\t0\t0\n", "enp3s0"},
		{"down route ignored", hdr +
			"eth1\t00000000\t0102A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0\n", ""},
		{"no default", hdr +
			"eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n", ""},
		{"garbage", "not a route table\n\x00\n", ""},
		{"empty", "", ""},
	} {
		if got := parseDefaultRouteIface(strings.NewReader(tc.table)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseBootTime(t *testing.T) {
	got := parseBootTime(strings.NewReader("cpu  1 2 3\nintr 5\nbtime 1746088200\nprocesses 9\n"))
	if want := time.Unix(1746088200, 0).UTC(); !got.Equal(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := parseBootTime(strings.NewReader("btime x\n")); !got.IsZero() {
		t.Errorf("bad btime parsed as %v", got)
	}
}

func TestDerivedIDs(t *testing.T) {
	id := defaultInstanceID(testHost)
	if !regexp.MustCompile(`^i-[0-9a-f]{17}$`).MatchString(id) {
		t.Errorf("instance ID %q is not i- + 17 hex", id)
	}
	if again := defaultInstanceID(testHost); again != id {
		t.Errorf("instance ID not stable: %q then %q", id, again)
	}
	other := testHost
	other.MachineID = "00000000000000000000000000000001"
	if defaultInstanceID(other) == id {
		t.Error("different machine IDs give the same instance ID")
	}
	noID := HostFacts{Hostname: "a"}
	if got := defaultInstanceID(noID); got == defaultInstanceID(HostFacts{Hostname: "b"}) || !instanceRE.MatchString(got) {
		t.Errorf("host-name fallback %q", got)
	}
	if p := defaultInstanceProfileID(testRoleARN); !profIDRE.MatchString(p) {
		t.Errorf("instance profile ID %q", p)
	}
	got := map[string]string{}
	for _, az := range []string{"us-east-1a", "ap-southeast-2b", "eu-central-1c", "us-gov-west-1a", "cn-northwest-1b", "il-central-1a"} {
		got[az] = defaultAZID(az)
		if !azIDRE.MatchString(got[az]) {
			t.Errorf("zone ID %q for %s is not well-formed", got[az], az)
		}
	}
	want := map[string]string{
		"us-east-1a": "use1-az1", "ap-southeast-2b": "apse2-az2", "eu-central-1c": "euc1-az3",
		"us-gov-west-1a": "usgw1-az1", "cn-northwest-1b": "cnnw1-az2", "il-central-1a": "ilc1-az1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("zone IDs (-want +got):\n%s", diff)
	}
}

func TestDiscoverHostMachineID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(p, []byte("4f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	f := DiscoverHost(p)
	if f.MachineID != "4f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f" {
		t.Errorf("MachineID = %q", f.MachineID)
	}
	if h, _ := os.Hostname(); f.Hostname != h {
		t.Errorf("Hostname = %q, want %q", f.Hostname, h)
	}
	if f.IPv4.IsValid() && !f.IPv4.Is4() {
		t.Errorf("IPv4 = %v", f.IPv4)
	}
	if missing := DiscoverHost(filepath.Join(t.TempDir(), "none")); missing.MachineID != "" {
		t.Errorf("missing file gave machine ID %q", missing.MachineID)
	}
}

// Without a MAC or address (no default route), those entries are 404 and
// the identity document says null, as on an IPv6-only instance.
func TestNoNetworkFacts(t *testing.T) {
	e := &testEnv{src: &fakeSource{creds: testCreds(1)}, clock: &fakeClock{now: t0}, obs: &recorder{}}
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	srv, err := NewServer(cfg, e.src, Options{TokenKey: testKey, Now: e.clock.Now, Host: &HostFacts{Hostname: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	for _, p := range []string{"/latest/meta-data/local-ipv4", "/latest/meta-data/mac", "/latest/meta-data/network/"} {
		if w := e.do("GET", p, nil); w.Code != 404 {
			t.Errorf("%s: %d, want 404", p, w.Code)
		}
	}
	doc := e.do("GET", "/latest/dynamic/instance-identity/document", nil).Body.String()
	if !strings.Contains(doc, `"privateIp" : null`) || !strings.Contains(doc, `"pendingTime" : "2026-05-17T12:00:00Z"`) {
		t.Errorf("document:\n%s", doc)
	}
}

package daemon

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/imds"
)

// plannedNet is a network that, like netredirect.Redirector, decides in
// Setup which listeners the daemon needs: imds.listen and, unless
// network.ipv6 is false, [fd00:ec2::254] on the same port.
type plannedNet struct {
	fakeNet
	mu      sync.Mutex
	planned []netip.AddrPort
	cfg     *config.Config
}

var v6Endpoint = netip.MustParseAddr("fd00:ec2::254")

func (n *plannedNet) Setup(ctx context.Context) error {
	if err := n.fakeNet.Setup(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.planned = []netip.AddrPort{n.cfg.IMDS.Listen}
	if n.cfg.Network.IPv6 != "false" {
		n.planned = append(n.planned, netip.AddrPortFrom(v6Endpoint, n.cfg.IMDS.Listen.Port()))
	}
	return nil
}

func (n *plannedNet) Listeners() []netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.planned)
}

// plannedDeps are w's deps with a plannedNet, and every listener bound
// kept by the address it was asked for.
func (w *world) plannedDeps(dir string) (Deps, *sync.Map) {
	deps := w.deps(dir)
	netName := func(cfg *config.Config) string {
		return cfg.Network.Link + "->" + cfg.IMDS.Listen.String() + "/ipv6=" + cfg.Network.IPv6
	}
	deps.NewNetwork = func(cfg *config.Config) (Network, error) {
		return &plannedNet{fakeNet: fakeNet{w: w, link: netName(cfg)}, cfg: cfg}, nil
	}
	deps.Components = func(cfg *config.Config) Components {
		return Components{Credentials: cfg.RoleARN, Network: netName(cfg)}
	}
	bound := &sync.Map{}
	deps.Listen = func(addr string, hop int) (net.Listener, error) {
		if err := w.record("listen:" + addr); err != nil {
			return nil, err
		}
		ln, err := imds.Listen("tcp", "127.0.0.1:0", hop)
		if err == nil {
			bound.Store(addr, ln)
		}
		return ln, err
	}
	return deps, bound
}

func writeV6Config(t *testing.T, path, listen, ipv6 string) {
	t.Helper()
	body := "role_arn: arn:aws:iam::123456789012:role/app\nimds:\n  listen: " + listen + "\nnetwork:\n  ipv6: " + ipv6 + "\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listenerOf returns the listener bound for addr, or fails.
func listenerOf(t *testing.T, bound *sync.Map, addr string) *imds.Listener {
	t.Helper()
	v, ok := bound.Load(addr)
	if !ok {
		t.Fatalf("nothing was bound for %s", addr)
	}
	return v.(*imds.Listener)
}

// answers reports whether the listener bound for addr serves the API.
func answers(t *testing.T, bound *sync.Map, addr string) bool {
	t.Helper()
	c, err := net.Dial("tcp", listenerOf(t, bound, addr).Addr().String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestListenersFollowTheNetwork: the daemon binds every listener the
// network planned in Setup, after Setup and before READY; status shows
// them all; reloads that turn IPv6 on or off, change the port or the hop
// limit bind new listeners before the redirect moves where they can, and
// never close one that stays planned.
func TestListenersFollowTheNetwork(t *testing.T) {
	w, dir := newWorld(t), t.TempDir()
	path := dir + "/c.yaml"
	writeV6Config(t, path, "127.0.0.1:8254", "auto")
	deps, bound := w.plannedDeps(dir)
	cancel, reload, done := start(t, w, deps, path)
	defer func() { cancel(); wait(t, done) }()

	const v4, v6 = "127.0.0.1:8254", "[fd00:ec2::254]:8254"
	events := func(from int) []string {
		var out []string
		for _, e := range w.Events()[from:] {
			if strings.HasPrefix(e, "setup:") || strings.HasPrefix(e, "teardown:") || strings.HasPrefix(e, "listen:") {
				out = append(out, e)
			}
		}
		return out
	}
	if d := cmp.Diff([]string{"setup:auto->127.0.0.1:8254/ipv6=auto", "listen:" + v4, "listen:" + v6}, events(0)); d != "" {
		t.Errorf("start (-want +got):\n%s", d)
	}
	st := mustStatus(t, dir)
	if len(st.Listeners) != 2 || st.Listeners[0] != st.Listen {
		t.Errorf("status listeners %q (listen %q), want both, imds.listen first", st.Listeners, st.Listen)
	}
	for _, a := range []string{v4, v6} {
		if !answers(t, bound, a) {
			t.Errorf("%s does not answer", a)
		}
	}

	// IPv6 off: the IPv6 listener closes after the redirect left it.
	n := len(w.Events())
	writeV6Config(t, path, "127.0.0.1:8254", "false")
	w.reloadAndWait(reload)
	if d := cmp.Diff([]string{"setup:auto->127.0.0.1:8254/ipv6=false"}, events(n)); d != "" {
		t.Errorf("ipv6 off (-want +got):\n%s", d)
	}
	if st := mustStatus(t, dir); len(st.Listeners) != 1 || st.LastReloadError != "" {
		t.Errorf("after ipv6 off: listeners %q, reload error %q", st.Listeners, st.LastReloadError)
	}
	if answers(t, bound, v6) || !answers(t, bound, v4) {
		t.Errorf("after ipv6 off: IPv6 listener open %t, IPv4 listener open %t", answers(t, bound, v6), answers(t, bound, v4))
	}

	// IPv6 on: bound once Setup has put the address in place.
	n = len(w.Events())
	writeV6Config(t, path, "127.0.0.1:8254", "true")
	w.reloadAndWait(reload)
	if d := cmp.Diff([]string{"setup:auto->127.0.0.1:8254/ipv6=true", "listen:" + v6}, events(n)); d != "" {
		t.Errorf("ipv6 on (-want +got):\n%s", d)
	}
	if !answers(t, bound, v6) || len(mustStatus(t, dir).Listeners) != 2 {
		t.Errorf("after ipv6 on: IPv6 listener does not answer, or status lacks it")
	}

	// A new hop limit: the same sockets, each with the new limit.
	n = len(w.Events())
	oldV4, oldV6 := listenerOf(t, bound, v4), listenerOf(t, bound, v6)
	writeConfig(t, path, "app", "  hop_limit: 3\nnetwork:\n  ipv6: \"true\"\n")
	w.reloadAndWait(reload)
	if e := events(n); len(e) != 0 {
		t.Errorf("hop limit reload touched listeners or the network: %q", e)
	}
	if oldV4.HopLimit() != 3 || oldV6.HopLimit() != 3 {
		t.Errorf("hop limits after reload: %d, %d; want 3", oldV4.HopLimit(), oldV6.HopLimit())
	}

	// A new port: both new listeners are bound before the redirect moves
	// to them; the old ones close after.
	n = len(w.Events())
	writeV6Config(t, path, "127.0.0.1:8255", "true")
	w.reloadAndWait(reload)
	want := []string{"listen:127.0.0.1:8255", "listen:[fd00:ec2::254]:8255", "setup:auto->127.0.0.1:8255/ipv6=true"}
	if d := cmp.Diff(want, events(n)); d != "" {
		t.Errorf("port change (-want +got):\n%s", d)
	}
	for a, open := range map[string]bool{v4: false, v6: false, "127.0.0.1:8255": true, "[fd00:ec2::254]:8255": true} {
		if answers(t, bound, a) != open {
			t.Errorf("after the port change, %s open = %t, want %t", a, !open, open)
		}
	}
}

// TestListenerBindFailureRestores: when the listener the new network plans
// cannot be bound, the reload is rejected, the previous redirect is put
// back and the previous listeners keep serving.
func TestListenerBindFailureRestores(t *testing.T) {
	w, dir := newWorld(t), t.TempDir()
	path := dir + "/c.yaml"
	writeV6Config(t, path, "127.0.0.1:8254", "false")
	deps, bound := w.plannedDeps(dir)
	cancel, reload, done := start(t, w, deps, path)
	defer func() { cancel(); wait(t, done) }()

	w.setFail("listen:[fd00:ec2::254]:8254", errors.New("address in use"))
	n := len(w.Events())
	writeV6Config(t, path, "127.0.0.1:8254", "true")
	w.reloadAndWait(reload)
	var got []string
	for _, e := range w.Events()[n:] {
		if strings.HasPrefix(e, "setup:") || strings.HasPrefix(e, "listen:") || strings.HasPrefix(e, "update:") {
			got = append(got, e)
		}
	}
	want := []string{"update:app", "setup:auto->127.0.0.1:8254/ipv6=true", "listen:[fd00:ec2::254]:8254",
		"setup:auto->127.0.0.1:8254/ipv6=false", "update:app"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("failed bind (-want +got):\n%s", d)
	}
	st := mustStatus(t, dir)
	if !strings.Contains(st.LastReloadError, "binding the metadata listener [fd00:ec2::254]:8254: address in use") || len(st.Listeners) != 1 {
		t.Errorf("status after a failed bind: error %q, listeners %q", st.LastReloadError, st.Listeners)
	}
	if !answers(t, bound, "127.0.0.1:8254") {
		t.Error("the previous listener stopped answering")
	}
}

// TestStartBindFailure: a planned listener that cannot be bound at start
// ends the start with the network error, everything removed.
func TestStartBindFailure(t *testing.T) {
	w, dir := newWorld(t), t.TempDir()
	path := dir + "/c.yaml"
	writeV6Config(t, path, "127.0.0.1:8254", "true")
	deps, _ := w.plannedDeps(dir)
	w.setFail("listen:[fd00:ec2::254]:8254", errors.New("cannot assign requested address"))
	err := Run(t.Context(), path, deps, nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitNetwork || !strings.Contains(err.Error(), "[fd00:ec2::254]:8254") {
		t.Fatalf("Run = %v, want exit %d naming the IPv6 listener", err, ExitNetwork)
	}
	evs := w.Events()
	if !slices.Contains(evs, "teardown:auto->127.0.0.1:8254/ipv6=true") {
		t.Errorf("the redirect was not removed after the failed bind: %q", evs)
	}
}

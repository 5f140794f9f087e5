package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/imds"
)

// world records, in order, every side effect the daemon performs through
// its fakes, and lets a test make any step fail.
type world struct {
	t      *testing.T
	mu     sync.Mutex
	events []string
	fail   map[string]error // event name → error returned by that step
	notes  []string
	ready  chan struct{}
	once   sync.Once

	entered, release chan struct{} // for a request held in the handler
	changed          chan struct{} // closed and replaced on every event
}

// reloadAndWait sends a reload and waits for the READY=1 that ends it.
func (w *world) reloadAndWait(reload chan Reload) {
	w.t.Helper()
	// readies counts the READY=1 notes so far, and returns the channel
	// closed at the next event.
	readies := func() (int, chan struct{}) {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, e := range w.events {
			if e == "notify:READY=1" {
				n++
			}
		}
		return n, w.changed
	}
	before, _ := readies()
	reload <- Reload{}
	timeout := time.After(10 * time.Second)
	for {
		n, changed := readies()
		if n > before {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			w.t.Fatal("reload did not finish within 10s")
		}
	}
}

// newSetup returns a fresh world and a directory holding a valid config
// for role "app".
func newSetup(t *testing.T) (w *world, dir, path string) {
	t.Helper()
	w, dir = newWorld(t), t.TempDir()
	path = filepath.Join(dir, "c.yaml")
	writeConfig(t, path, "app", "")
	return w, dir, path
}

func newWorld(t *testing.T) *world {
	return &world{t: t, fail: map[string]error{}, ready: make(chan struct{}), changed: make(chan struct{})}
}

func (w *world) record(ev string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, ev)
	close(w.changed)
	w.changed = make(chan struct{})
	return w.fail[ev]
}

func (w *world) setFail(ev string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail[ev] = err
}

func (w *world) Events() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

func (w *world) Notify(state string) error {
	w.mu.Lock()
	w.notes = append(w.notes, state)
	w.mu.Unlock()
	err := w.record("notify:" + strings.SplitN(state, "\n", 2)[0])
	if strings.HasPrefix(state, "READY=1") {
		w.once.Do(func() { close(w.ready) })
	}
	return err
}

type fakeCreds struct {
	w    *world
	role string
}

func (c *fakeCreds) Fetch(ctx context.Context) error { return c.w.record("fetch:" + roleName(c.role)) }
func (c *fakeCreds) Run(ctx context.Context) error {
	<-ctx.Done()
	c.w.record("creds-run-stopped:" + roleName(c.role))
	return ctx.Err()
}
func (c *fakeCreds) Current() (credentials.Credentials, error) {
	c.w.mu.Lock()
	err := c.w.fail["current"]
	c.w.mu.Unlock()
	if err != nil {
		return credentials.Credentials{}, err
	}
	return credentials.Credentials{AccessKeyID: "AKID", RoleARN: c.role, Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}, nil
}

// Failing names the roles the test says fail, as credentials.Set does.
func (c *fakeCreds) Failing() []string {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	var out []string
	for _, k := range []string{"current", "failing"} {
		if err := c.w.fail[k]; err != nil && (k != "current" || c.w.fail["on-demand"] == nil) {
			out = append(out, err.Error())
		}
	}
	return out
}

type fakeNet struct {
	w    *world
	link string
}

func (n *fakeNet) Setup(ctx context.Context) error    { return n.w.record("setup:" + n.link) }
func (n *fakeNet) Teardown(ctx context.Context) error { return n.w.record("teardown:" + n.link) }
func (n *fakeNet) Run(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

type fakeHandler struct {
	w     *world
	mu    sync.Mutex
	creds CredentialEngine
}

func (h *fakeHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	c := h.creds
	h.mu.Unlock()
	cur, _ := c.Current()
	if r.URL.Path == "/slow" && h.w.entered != nil {
		h.w.entered <- struct{}{} // a request in flight during stop
		<-h.w.release
		h.w.record("request-done")
	}
	io.WriteString(rw, roleName(cur.RoleARN))
}

// Update, like imds.Server's, changes nothing when it fails.
func (h *fakeHandler) Update(cfg *config.Config, creds CredentialEngine) error {
	if err := h.w.record("update:" + cfg.RoleARN.Name); err != nil {
		return err
	}
	h.mu.Lock()
	h.creds = creds
	h.mu.Unlock()
	return nil
}

func (w *world) deps(dir string) Deps {
	return Deps{
		Log: slog.New(slog.NewTextHandler(w.t.Output(), nil)),
		Load: func(path string) (*config.Config, error) {
			if err := w.record("load"); err != nil {
				return nil, err
			}
			return config.Load(path)
		},
		Cleanup: func(ctx context.Context) error { return w.record("cleanup") },
		NewCredentials: func(ctx context.Context, cfg *config.Config) (CredentialEngine, error) {
			return &fakeCreds{w: w, role: cfg.RoleARN.String()}, nil
		},
		NewNetwork: func(cfg *config.Config) (Network, error) {
			return &fakeNet{w: w, link: cfg.Network.Link + "->" + cfg.IMDS.Listen.String()}, nil
		},
		Components: func(cfg *config.Config) Components {
			c := Components{Credentials: cfg.RoleARN}
			if cfg.ManageNetwork() {
				c.Network = fakeNet{link: cfg.Network.Link + "->" + cfg.IMDS.Listen.String()}
			}
			return c
		},
		NewHandler: func(cfg *config.Config, creds CredentialEngine) (Handler, error) {
			return &fakeHandler{w: w, creds: creds}, nil
		},
		Listen: func(addr string, hop int) (net.Listener, error) {
			if err := w.record(fmt.Sprintf("listen:%s/hop%d", addr, hop)); err != nil {
				return nil, err
			}
			return imds.Listen("tcp", "127.0.0.1:0", hop)
		},
		// The tests listen on 8254 and 8255; port checks have their own test.
		AllowUnprivilegedPort: func(*config.Config) bool { return true },
		ListenMetrics: func(addr string) (net.Listener, error) {
			w.record("metrics-listen")
			return net.Listen("tcp", "127.0.0.1:0")
		},
		Notifier:      w,
		ControlSocket: filepath.Join(dir, "control.sock"),
		Version:       "test",
	}
}

func writeConfig(t *testing.T, path, role, extra string) {
	t.Helper()
	body := "role_arn: arn:aws:iam::123456789012:role/" + role + "\nimds:\n  listen: 127.0.0.1:8254\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the daemon in the background and waits for READY=1.
func start(t *testing.T, w *world, deps Deps, path string) (cancel func(), reload chan Reload, done chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reload = make(chan Reload)
	done = make(chan error, 1)
	go func() { done <- Run(ctx, path, deps, reload) }()
	select {
	case <-w.ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon exited before READY: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("no READY=1 within 10s")
	}
	return cancel, reload, done
}

func wait(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop within 10s")
		return nil
	}
}

func TestLifecycleOrder(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, _, done := start(t, w, w.deps(dir), path)

	// The status socket answers while running.
	st := mustStatus(t, dir)
	if st.RoleARN != "arn:aws:iam::123456789012:role/app" || st.CredentialsExpire != "2030-01-01T00:00:00Z" || !st.ManageNetwork {
		t.Errorf("status = %+v", st)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{
		"notify:STATUS=loading " + path,
		"load",
		"notify:STATUS=removing leftovers of an earlier run",
		"cleanup",
		"notify:STATUS=fetching first credentials for arn:aws:iam::123456789012:role/app",
		"fetch:app",
		"notify:STATUS=setting up 169.254.169.254",
		"setup:auto->127.0.0.1:8254",
		"listen:127.0.0.1:8254/hop1",
		"metrics-listen",
		"notify:READY=1",
		"notify:STOPPING=1",
		"creds-run-stopped:app",
		"teardown:auto->127.0.0.1:8254",
	}
	if d := cmp.Diff(want, w.Events()); d != "" {
		t.Errorf("side effects (-want +got):\n%s", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "control.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestStartFailures: a failing step exits with its code and undoes every
// earlier step, so nothing stays installed.
func TestStartFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		failAt   string
		code     int
		wantTail []string
	}{
		{"load", ExitConfig, []string{"load"}},
		{"cleanup", ExitNetwork, []string{"cleanup"}},
		{"fetch:app", ExitCredentials, []string{"fetch:app"}},
		{"setup:auto->127.0.0.1:8254", ExitNetwork, []string{"setup:auto->127.0.0.1:8254", "teardown:auto->127.0.0.1:8254"}},
		{"listen:127.0.0.1:8254/hop1", ExitNetwork, []string{"listen:127.0.0.1:8254/hop1", "teardown:auto->127.0.0.1:8254"}},
	}
	for _, tt := range tests {
		t.Run(tt.failAt, func(t *testing.T) {
			w := newWorld(t)
			w.setFail(tt.failAt, boom)
			dir := t.TempDir()
			path := filepath.Join(dir, "c.yaml")
			writeConfig(t, path, "app", "")
			err := Run(context.Background(), path, w.deps(dir), nil)
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != tt.code || !errors.Is(err, boom) {
				t.Fatalf("Run = %v, want exit code %d wrapping boom", err, tt.code)
			}
			ev := w.Events()
			var effects []string
			for _, e := range ev {
				if !strings.HasPrefix(e, "notify:") {
					effects = append(effects, e)
				}
			}
			tail := effects[len(effects)-len(tt.wantTail):]
			if d := cmp.Diff(tt.wantTail, tail); d != "" {
				t.Errorf("last side effects (-want +got):\n%s\nall: %q", d, ev)
			}
			for _, e := range ev {
				if strings.HasPrefix(e, "notify:READY") {
					t.Errorf("READY sent despite failure: %q", ev)
				}
			}
		})
	}
}

func TestBadConfigChangesNothing(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("imds: {tokens: sometimes}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), path, w.deps(dir), nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitConfig {
		t.Fatalf("Run = %v, want ExitConfig", err)
	}
	for _, want := range []string{"role_arn: required", "imds.tokens"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if d := cmp.Diff([]string{"notify:STATUS=loading " + path, "load", "notify:STATUS=start-up failed: config " + path + ": role_arn: required (the IAM role to serve, e.g. arn:aws:iam::123456789012:role/app);imds.tokens: \"sometimes\" must be required or optional"}, w.Events()); d != "" {
		t.Errorf("side effects (-want +got):\n%s", d)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestReload(t *testing.T) {
	w, dir, path := newSetup(t)
	deps := w.deps(dir)
	cancel, reload, done := start(t, w, deps, path)
	defer cancel()
	sock := filepath.Join(dir, "control.sock")
	st, _, err := ReadStatus(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + st.Listen + "/"
	if got := get(t, url); got != "app" {
		t.Fatalf("before reload: %q", got)
	}

	// An invalid config is rejected; the old one keeps serving.
	if err := os.WriteFile(path, []byte("role_arn: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(w.Events())
	w.reloadAndWait(reload)
	st, _, err = ReadStatus(context.Background(), sock) // served after the reload finished
	if err != nil {
		t.Fatal(err)
	}
	if st.LastReloadError == "" || st.Reloads != 0 {
		t.Errorf("after a bad reload: status %+v", st)
	}
	if got := get(t, url); got != "app" {
		t.Errorf("after a bad reload: %q", got)
	}
	if d := cmp.Diff([]string{"notify:RELOADING=1", "load", "notify:READY=1"}, w.Events()[before:]); d != "" {
		t.Errorf("bad reload side effects (-want +got):\n%s", d)
	}

	// A new role gets its first credentials before the switch, and the
	// old engine stops only after.
	writeConfig(t, path, "other", "")
	before = len(w.Events())
	w.reloadAndWait(reload)
	mustStatus(t, dir)
	if got := get(t, url); got != "other" {
		t.Errorf("after reload: %q, want other", got)
	}
	if d := cmp.Diff([]string{"notify:RELOADING=1", "load", "fetch:other", "update:other", "creds-run-stopped:app", "notify:READY=1"}, w.Events()[before:]); d != "" {
		t.Errorf("role reload side effects (-want +got):\n%s", d)
	}

	// A new listener: bound, network converged to it, old one closed.
	writeConfig(t, path, "other", "")
	if err := os.WriteFile(path, []byte("role_arn: arn:aws:iam::123456789012:role/other\nimds:\n  listen: 127.0.0.1:8255\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = len(w.Events())
	w.reloadAndWait(reload)
	st = mustStatus(t, dir)
	if d := cmp.Diff([]string{"notify:RELOADING=1", "load", "listen:127.0.0.1:8255/hop1", "update:other", "setup:auto->127.0.0.1:8255", "notify:READY=1"}, w.Events()[before:]); d != "" {
		t.Errorf("listener reload side effects (-want +got):\n%s", d)
	}
	if st.Listen == strings.TrimPrefix(strings.TrimSuffix(url, "/"), "http://") {
		t.Errorf("listener not switched: %s", st.Listen)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := fresh.Get(url); err == nil {
		t.Errorf("old listener %s still accepts", url)
	}
	if got := get(t, "http://"+st.Listen+"/"); got != "other" {
		t.Errorf("new listener: %q", got)
	}

	// Network off: the redirect is removed.
	if err := os.WriteFile(path, []byte("role_arn: arn:aws:iam::123456789012:role/other\nimds:\n  listen: 127.0.0.1:8255\nnetwork:\n  manage: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = len(w.Events())
	w.reloadAndWait(reload)
	mustStatus(t, dir)
	if d := cmp.Diff([]string{"notify:RELOADING=1", "load", "update:other", "teardown:auto->127.0.0.1:8255", "notify:READY=1"}, w.Events()[before:]); d != "" {
		t.Errorf("network-off reload side effects (-want +got):\n%s", d)
	}
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// TestReloadFetchFailureKeepsOldRole: STS refusing the new role must not
// take the old one away.
func TestReloadFetchFailureKeepsOldRole(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, reload, done := start(t, w, w.deps(dir), path)
	defer cancel()
	w.setFail("fetch:denied", errors.New("AccessDenied"))
	writeConfig(t, path, "denied", "")
	w.reloadAndWait(reload)
	st := mustStatus(t, dir)
	if !strings.Contains(st.LastReloadError, "AccessDenied") || st.RoleARN != "arn:aws:iam::123456789012:role/app" {
		t.Errorf("status after refused role: %+v", st)
	}
	if got := get(t, "http://"+st.Listen+"/"); got != "app" {
		t.Errorf("serving %q after refused reload, want app", got)
	}
	cancel()
	wait(t, done)
}

// TestStopFinishesInFlight: a request in flight when the stop begins is
// answered, then the network is torn down.
func TestStopFinishesInFlight(t *testing.T) {
	w, dir, path := newSetup(t)
	w.entered, w.release = make(chan struct{}), make(chan struct{})
	cancel, _, done := start(t, w, w.deps(dir), path)
	st := mustStatus(t, dir)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + st.Listen + "/slow")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-w.entered
	cancel()
	// Let the stop begin with the request still held in the handler.
	for !contains(w.Events(), "notify:STOPPING=1") {
		runtime.Gosched()
	}
	close(w.release)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "app" {
		t.Errorf("in-flight request got %q", g)
	}
	// The stop waited for the request before removing the network.
	ev := w.Events()
	if d := cmp.Diff([]string{"request-done", "creds-run-stopped:app", "teardown:auto->127.0.0.1:8254"}, ev[len(ev)-3:]); d != "" {
		t.Errorf("stop order (-want +got):\n%s\nall: %q", d, ev)
	}
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// TestHealthz: 200 only while credentials are valid and this process
// answers on its listener and through the client-facing endpoint; 503 when
// anything else answers there, even as EC2ws.
func TestHealthz(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint func(t *testing.T, own net.Listener) string
		want     int
		wantBody string
	}{
		{"redirect reaches us", func(t *testing.T, own net.Listener) string { return own.Addr().String() }, 200, "ok"},
		{"impostor answers as EC2ws", func(t *testing.T, _ net.Listener) string {
			ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Server", "EC2ws")
				io.WriteString(w, "0123456789abcdef")
			}))
			t.Cleanup(ep.Close)
			return strings.TrimPrefix(ep.URL, "http://")
		}, 503, "does not reach this imds-shim"},
		{"nothing", func(t *testing.T, _ net.Listener) string { return "127.0.0.1:1" }, 503, "does not reach this imds-shim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dir, path := newSetup(t)
			deps := w.deps(dir)
			var metricsAddr string
			deps.ListenMetrics = func(string) (net.Listener, error) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err == nil {
					metricsAddr = ln.Addr().String()
				}
				return ln, err
			}
			own, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			deps.Listen = func(string, int) (net.Listener, error) { return own, nil }
			deps.Endpoint = tc.endpoint(t, own)
			cancel, _, done := start(t, w, deps, path)
			defer func() { cancel(); wait(t, done) }()
			check := func(wantCode int, wantBody string) {
				t.Helper()
				resp, err := http.Get("http://" + metricsAddr + "/healthz")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != wantCode || !strings.Contains(string(b), wantBody) {
					t.Errorf("/healthz = %d %q, want %d containing %q", resp.StatusCode, b, wantCode, wantBody)
				}
			}
			check(tc.want, tc.wantBody)
			if tc.want == 200 {
				w.setFail("current", credentials.ErrNoCredentials)
				check(503, "unhealthy: no valid credentials")
				w.setFail("current", nil)
				check(200, "ok")
				// One role failing while another serves: 200, naming it
				// (a restart would not make STS accept it).
				w.setFail("failing", errors.New("web (roles[0]): AccessDenied"))
				check(200, "degraded: 1 role(s) without credentials (their callers get 500):\n  web (roles[0]): AccessDenied")
				w.setFail("failing", nil)
				check(200, "ok")
				// Only per-caller roles, no caller yet: no credentials, but
				// nothing fails either.
				w.setFail("current", credentials.ErrNoCredentials)
				w.setFail("on-demand", errors.New("sessions are made on demand"))
				check(200, "ok")
			}
		})
	}
}

// TestReloadRefusedByHandlerChangesNothing: a configuration the handler
// refuses (say an unreadable metadata_dir) on top of a new listener must
// leave the redirect and the old listener as they were.
func TestReloadRefusedByHandlerChangesNothing(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, reload, done := start(t, w, w.deps(dir), path)
	defer cancel()
	sock := filepath.Join(dir, "control.sock")
	st, _, err := ReadStatus(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	w.setFail("update:refused", errors.New("metadata_dir: no such directory"))
	if err := os.WriteFile(path, []byte("role_arn: arn:aws:iam::123456789012:role/refused\nimds:\n  listen: 127.0.0.1:8255\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(w.Events())
	w.reloadAndWait(reload)
	if d := cmp.Diff([]string{"notify:RELOADING=1", "load", "fetch:refused", "listen:127.0.0.1:8255/hop1", "update:refused", "notify:READY=1"}, w.Events()[before:]); d != "" {
		t.Errorf("refused reload side effects (-want +got):\n%s", d)
	}
	after, _, err := ReadStatus(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	if after.Listen != st.Listen || after.RoleARN != st.RoleARN || !strings.Contains(after.LastReloadError, "no such directory") {
		t.Errorf("after a refused reload: %+v", after)
	}
	if got := get(t, "http://"+st.Listen+"/"); got != "app" {
		t.Errorf("old listener serves %q, want app", got)
	}
	cancel()
	wait(t, done)
}

// TestReloadNetworkFailureRestores: when the new redirect cannot be set
// up, the previous plan and the previous handler configuration come back.
func TestReloadNetworkFailureRestores(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, reload, done := start(t, w, w.deps(dir), path)
	defer cancel()
	w.setFail("setup:auto->127.0.0.1:8255", errors.New("iptables: no chain"))
	if err := os.WriteFile(path, []byte("role_arn: arn:aws:iam::123456789012:role/app\nimds:\n  listen: 127.0.0.1:8255\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(w.Events())
	w.reloadAndWait(reload)
	want := []string{"notify:RELOADING=1", "load", "listen:127.0.0.1:8255/hop1", "update:app",
		"setup:auto->127.0.0.1:8255", "setup:auto->127.0.0.1:8254", "update:app", "notify:READY=1"}
	if d := cmp.Diff(want, w.Events()[before:]); d != "" {
		t.Errorf("failed network reload side effects (-want +got):\n%s", d)
	}
	st := mustStatus(t, dir)
	if !strings.Contains(st.LastReloadError, "no chain") || st.Reloads != 0 {
		t.Errorf("status after failed network reload: %+v", st)
	}
	if got := get(t, "http://"+st.Listen+"/"); got != "app" {
		t.Errorf("old listener serves %q", got)
	}
	cancel()
	wait(t, done)
}

// mustStatus reads the daemon's status from its control socket in dir.
func mustStatus(t *testing.T, dir string) *Status {
	t.Helper()
	st, _, err := ReadStatus(context.Background(), filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestReloadHopLimitKeepsListener: a reload that changes only
// imds.hop_limit changes it on the same socket: nothing is bound or
// closed, and a client connecting all the while is never refused.
func TestReloadHopLimitKeepsListener(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, reload, done := start(t, w, w.deps(dir), path)
	defer func() { cancel(); wait(t, done) }()
	addr := mustStatus(t, dir).Listen

	stop := make(chan struct{})
	var attempts, failures atomic.Int64
	var firstErr atomic.Value
	connected := make(chan struct{}, 1)
	go func() {
		defer close(connected)
		for {
			select {
			case <-stop:
				return
			default:
			}
			attempts.Add(1)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
				continue
			}
			c.Close()
		}
	}()
	before := len(w.Events())
	for i := range 20 {
		writeConfig(t, path, "app", fmt.Sprintf("  hop_limit: %d\n", 2+i%2))
		w.reloadAndWait(reload)
		if st := mustStatus(t, dir); st.HopLimit != 2+i%2 || st.Listen != addr || st.LastReloadError != "" {
			t.Fatalf("after reload %d: status %+v", i, st)
		}
	}
	close(stop)
	<-connected
	for _, ev := range w.Events()[before:] {
		if strings.HasPrefix(ev, "listen:") {
			t.Errorf("a hop-limit reload bound a listener: %s", ev)
		}
	}
	if n := failures.Load(); n != 0 || attempts.Load() < 20 {
		t.Errorf("%d of %d connections failed across 20 hop-limit reloads (first: %v)", n, attempts.Load(), firstErr.Load())
	}
}

// TestPortMustBePrivileged: a listen port any user may bind is refused at
// start (a configuration error, before anything is installed) and on
// reload, unless the operator allowed it; the sysctl is read, not assumed.
func TestPortMustBePrivileged(t *testing.T) {
	w, dir, path := newSetup(t)
	deps := w.deps(dir)
	deps.AllowUnprivilegedPort = nil
	deps.UnprivilegedPortStart = func() (int, error) { return 9200, nil } // a host that raised it
	cancel, reload, done := start(t, w, deps, path)                       // 8254 < 9200: privileged here
	defer func() { cancel(); wait(t, done) }()

	writeConfig(t, path, "app", "") // same port: no check, no change
	if err := os.WriteFile(path, []byte("role_arn: arn:aws:iam::123456789012:role/app\nimds:\n  listen: 127.0.0.1:9300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w.reloadAndWait(reload)
	st := mustStatus(t, dir)
	if !strings.Contains(st.LastReloadError, "imds.listen: port 9300 can be bound by any user") {
		t.Errorf("reload to an unprivileged port: last error %q", st.LastReloadError)
	}
	for _, ev := range w.Events() {
		if ev == "listen:127.0.0.1:9300/hop1" {
			t.Errorf("the unprivileged port was bound")
		}
	}

	// At start: exit 3 before cleanup, credentials or network.
	w2, dir2, path2 := newSetup(t)
	deps2 := w2.deps(dir2)
	deps2.AllowUnprivilegedPort = nil
	deps2.UnprivilegedPortStart = func() (int, error) { return 1024, nil }
	err := Run(context.Background(), path2, deps2, nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != ExitConfig || !strings.Contains(err.Error(), "ip_unprivileged_port_start = 1024") {
		t.Errorf("start on 8254 = %v, want exit %d naming the sysctl", err, ExitConfig)
	}
	if d := cmp.Diff([]string{"notify:STATUS=loading " + path2, "load", "notify:STATUS=start-up failed: " + oneLine(err)}, w2.Events()); d != "" {
		t.Errorf("start side effects (-want +got):\n%s", d)
	}
	deps2.AllowUnprivilegedPort = func(*config.Config) bool { return true }
	ctx, stopIt := context.WithCancel(context.Background())
	stopIt()
	if err := Run(ctx, path2, deps2, nil); err != nil && strings.Contains(err.Error(), "ip_unprivileged_port_start") {
		t.Errorf("allowed unprivileged port still refused: %v", err)
	}
}

// TestWatchdogNeedsThisProcess: WATCHDOG=1 is sent while this process
// answers through the endpoint, and never while something else does.
func TestWatchdogNeedsThisProcess(t *testing.T) {
	t.Run("ours", func(t *testing.T) {
		w, dir, path := newSetup(t)
		deps := w.deps(dir)
		own, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		deps.Listen = func(string, int) (net.Listener, error) { return own, nil }
		deps.Endpoint = own.Addr().String()
		deps.Watchdog = time.Millisecond
		cancel, _, done := start(t, w, deps, path)
		defer func() { cancel(); wait(t, done) }()
		for !contains(w.Events(), "notify:WATCHDOG=1") {
			select {
			case <-t.Context().Done():
				t.Fatal("no WATCHDOG=1")
			case <-time.After(time.Millisecond):
			}
		}
	})
	t.Run("impostor", func(t *testing.T) {
		w, dir, path := newSetup(t)
		deps := w.deps(dir)
		hits := make(chan struct{}, 100)
		ep := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Server", "EC2ws")
			io.WriteString(rw, strings.Repeat("0", 64))
			hits <- struct{}{}
		}))
		defer ep.Close()
		deps.Endpoint = strings.TrimPrefix(ep.URL, "http://")
		deps.Watchdog = time.Millisecond
		cancel, _, done := start(t, w, deps, path)
		defer func() { cancel(); wait(t, done) }()
		// Each tick probes the endpoint once; by the fourth hit the
		// watchdog has decided on the first three.
		for range 4 {
			<-hits
		}
		if contains(w.Events(), "notify:WATCHDOG=1") {
			t.Error("WATCHDOG=1 sent while another process answered on the endpoint")
		}
	})
}

// A client that guesses the probe path gets the metadata handler's answer:
// the probe answers only challenges it sent itself.
func TestProbePathIsNoOracle(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, _, done := start(t, w, w.deps(dir), path)
	defer func() { cancel(); wait(t, done) }()
	st := mustStatus(t, dir)
	if got := get(t, "http://"+st.Listen+probePrefix+strings.Repeat("ab", 32)); got != "app" {
		t.Errorf("guessed probe path answered %q, want the metadata handler's %q", got, "app")
	}
}

// TestMetricsAddressHeld: a local user who binds the metrics address
// first (it is above ip_unprivileged_port_start) cannot keep the daemon
// from serving credentials; the daemon says so in its status, and binds
// the address once it is free, at start and on a reload alike.
func TestMetricsAddressHeld(t *testing.T) {
	hold := func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	// waitMetrics polls the status until the metrics listener is bound,
	// then checks that it is the daemon's (a /healthz answer).
	waitMetrics := func(t *testing.T, dir, addr string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for st := mustStatus(t, dir); st.MetricsError != ""; st = mustStatus(t, dir) {
			if time.Now().After(deadline) {
				t.Fatalf("metrics listener not bound within 10s of its address being freed: %s", st.MetricsError)
			}
			runtime.Gosched()
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("/healthz after the address was freed: %v", err)
		}
		resp.Body.Close()
	}
	w, dir, path := newSetup(t)
	squat := hold(t)
	addr := squat.Addr().String()
	writeConfig(t, path, "app", "metrics:\n  listen: "+addr+"\n")
	deps := w.deps(dir)
	deps.ListenMetrics = func(a string) (net.Listener, error) { return net.Listen("tcp", a) }
	deps.MetricsRetry = 10 * time.Millisecond
	cancel, reload, done := start(t, w, deps, path) // READY=1 despite the held address
	st := mustStatus(t, dir)
	if !strings.Contains(st.MetricsError, "address already in use") || st.Metrics != addr {
		t.Fatalf("status: metrics %q, metrics_error %q; want the held address named", st.Metrics, st.MetricsError)
	}
	if got := get(t, "http://"+st.Listen+"/"); got != "app" {
		t.Fatalf("credentials while the metrics address is held: %q", got)
	}
	w.mu.Lock()
	readyNote := w.notes[slices.IndexFunc(w.notes, func(n string) bool { return strings.HasPrefix(n, "READY=1") })]
	w.mu.Unlock()
	if !strings.Contains(readyNote, "; no metrics: ") {
		t.Errorf("systemd's status at READY=1 does not say metrics are off: %q", readyNote)
	}
	squat.Close()
	waitMetrics(t, dir, addr)

	// A reload to another held address: the same.
	squat2 := hold(t)
	addr2 := squat2.Addr().String()
	writeConfig(t, path, "app", "metrics:\n  listen: "+addr2+"\n")
	w.reloadAndWait(reload)
	if st := mustStatus(t, dir); st.LastReloadError != "" || !strings.Contains(st.MetricsError, "address already in use") {
		t.Fatalf("after reload to a held address: reload error %q, metrics_error %q", st.LastReloadError, st.MetricsError)
	}
	squat2.Close()
	waitMetrics(t, dir, addr2)
	cancel()
	if err := wait(t, done); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// TestStatusPollingKeepsNoConnection: `imds-shim reload` polls the status
// every 50 ms; each ReadStatus must close its connection, or the control
// socket's cap (AdminLimits.MaxConns) would be full within seconds.
func TestStatusPollingKeepsNoConnection(t *testing.T) {
	w, dir, path := newSetup(t)
	cancel, _, done := start(t, w, w.deps(dir), path)
	defer func() { cancel(); wait(t, done) }()
	for i := range 2 * AdminLimits.MaxConns {
		if _, _, err := ReadStatus(context.Background(), filepath.Join(dir, "control.sock")); err != nil {
			t.Fatalf("status request %d: %v", i+1, err)
		}
	}
}

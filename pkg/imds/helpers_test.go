package imds

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/credentials"
)

const testRoleARN = "arn:aws:iam::123456789012:role/test-role"

// t0 is the fake clock's start.
var t0 = time.Date(2026, 5, 17, 12, 0, 0, 0, time.UTC)

// fakeSource is a stateful CredentialSource whose set the test changes.
type fakeSource struct {
	mu    sync.Mutex
	creds credentials.Credentials
	err   error
	calls int
}

func (f *fakeSource) Current() (credentials.Credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.creds, f.err
}

func (f *fakeSource) set(c credentials.Credentials, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creds, f.err = c, err
}

func testCreds(n int) credentials.Credentials {
	s := string(rune('0' + n))
	return credentials.Credentials{
		AccessKeyID:     "ASIATESTKEY00000000" + s,
		SecretAccessKey: "secret/with+chars" + s,
		SessionToken:    "session-token-" + s,
		Expires:         t0.Add(time.Hour).Add(500 * time.Millisecond),
		LastUpdated:     t0.Add(-time.Minute).Add(250 * time.Millisecond),
		RoleARN:         testRoleARN,
		AccountID:       "123456789012",
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recorder is an Observer that keeps what it saw, as text.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}
func (r *recorder) Request(class string, status int) {
	r.add("request " + class + " " + http.StatusText(status))
}
func (r *recorder) TokenIssued()                     { r.add("token issued") }
func (r *recorder) CredentialsUnavailable(err error) { r.add("unavailable: " + err.Error()) }
func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "\n")
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

var testHost = HostFacts{
	Hostname:  "build-07.example.internal",
	IPv4:      netip.MustParseAddr("10.20.30.40"),
	MAC:       "02:42:ac:11:00:02",
	MachineID: "4f1c2d3e4a5b6c7d8e9f0a1b2c3d4e5f",
	BootTime:  time.Date(2026, 5, 1, 8, 30, 0, 0, time.UTC),
}

func baseConfig() Config {
	return Config{RoleARN: testRoleARN}
}

type testEnv struct {
	srv   *Server
	src   *fakeSource
	clock *fakeClock
	obs   *recorder
}

func newEnv(t testing.TB, cfg Config) *testEnv {
	t.Helper()
	e := &testEnv{src: &fakeSource{creds: testCreds(1)}, clock: &fakeClock{now: t0}, obs: &recorder{}}
	host := testHost
	srv, err := NewServer(cfg, e.src, Options{
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Observer: e.obs,
		TokenKey: testKey,
		Now:      e.clock.Now,
		Host:     &host,
	})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	e.srv = srv
	return e
}

// do sends one request from loopback with Host 169.254.169.254 unless the
// headers say otherwise.
func (e *testEnv) do(method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://169.254.169.254"+path, nil)
	r.RemoteAddr = "127.0.0.1:40000"
	// The connection's local address: the daemon's loopback listener, as
	// for traffic redirected from 169.254.169.254, unless a row says.
	local := "127.0.0.1:8254"
	for k, v := range hdr {
		switch k {
		case "Host":
			r.Host = v
		case "LocalAddr":
			local = v
		case "RemoteAddr":
			r.RemoteAddr = v
		default:
			r.Header.Set(k, v)
		}
	}
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(local))))
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	return w
}

// token gets a token with the given TTL, failing the test otherwise.
func (e *testEnv) token(t testing.TB, ttl string) string {
	t.Helper()
	w := e.do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": ttl})
	if w.Code != 200 {
		t.Fatalf("PUT token: status %d, body %q", w.Code, w.Body.String())
	}
	return w.Body.String()
}

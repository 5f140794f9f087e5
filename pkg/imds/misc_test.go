package imds

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

// A client that reached the server by one of the host's own addresses may
// name that address as Host; any other address is refused.
func TestHostIsListenerAddress(t *testing.T) {
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	e := newEnv(t, cfg)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"10.20.30.40:8254", 200},
		{"10.20.30.40", 200},
		{"10.20.30.41:8254", 403},
	} {
		r := httptest.NewRequest("GET", "http://x/latest/meta-data/instance-type", nil)
		r.RemoteAddr = "127.0.0.1:4000"
		r.Host = tc.host
		local := &net.TCPAddr{IP: net.ParseIP("10.20.30.40"), Port: 8254}
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("Host %q on local 10.20.30.40: %d, want %d", tc.host, w.Code, tc.want)
		}
	}
}

func TestClasses(t *testing.T) {
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	cfg.UserData = []byte("x")
	e := newEnv(t, cfg)
	for _, p := range []string{
		"/", "/latest/", "/latest/meta-data/iam/info", "/latest/meta-data/iam/security-credentials/",
		"/latest/meta-data/instance-id", "/latest/dynamic/instance-identity/document", "/latest/user-data",
		"/nope/meta-data/instance-id", "/2016-09-02/meta-data/ami-id",
	} {
		e.do("GET", p, nil)
	}
	e.do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "5"})
	e.do("PUT", "/2016-09-02/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "5"})
	want := strings.Join([]string{
		"request other OK", "request other OK", "request credentials OK", "request credentials OK",
		"request metadata OK", "request dynamic OK", "request userdata OK",
		"request other Not Found", "request metadata OK",
		"token issued", "request token OK", "request token Forbidden",
	}, "\n")
	if diff := cmp.Diff(want, e.obs.String()); diff != "" {
		t.Errorf("observer (-want +got):\n%s", diff)
	}
}

// The reason credentials are missing goes to the log (rate-limited) and
// the observer, never to the client; no secret or token reaches the log,
// even at debug level.
func TestLogging(t *testing.T) {
	var buf syncbuf.Buffer
	clock := &fakeClock{now: t0}
	src := &fakeSource{creds: testCreds(1)}
	cfg := baseConfig()
	srv, err := NewServer(cfg, src, Options{
		Logger:   slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TokenKey: testKey, Now: clock.Now, Host: &testHost,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{srv: srv, src: src, clock: clock, obs: &recorder{}}
	tok := e.token(t, "600")
	auth := map[string]string{"X-aws-ec2-metadata-token": tok}
	path := "/latest/meta-data/iam/security-credentials/test-role"
	e.do("GET", path, auth)
	src.set(credentials.Credentials{}, fmt.Errorf("assuming role: %w", credentials.ErrNoCredentials))
	for range 3 {
		e.do("GET", path, auth)
		clock.Advance(time.Second)
	}
	clock.Advance(warnEvery)
	e.do("GET", path, auth)
	out := buf.String()
	if n := strings.Count(out, `msg="credentials unavailable, answering 500"`); n != 2 {
		t.Errorf("logged %d warnings for 4 failures over 13 s, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, `err="assuming role: no valid credentials"`) {
		t.Errorf("reason not logged:\n%s", out)
	}
	c := testCreds(1)
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken, c.AccessKeyID, tok} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "level=DEBUG msg=request method=GET") {
		t.Errorf("requests not logged at debug:\n%s", out)
	}
}

// Requests racing with Update see either the old or the new configuration,
// never a mix, and tokens stay valid throughout.
func TestUpdateConcurrent(t *testing.T) {
	e := newEnv(t, baseConfig())
	tok := e.token(t, "600")
	cfgs := []Config{baseConfig(), baseConfig()}
	cfgs[0].Region, cfgs[1].Region = "us-west-2", "ap-south-1"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 100)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := httptest.NewRequest("GET", "http://169.254.169.254/latest/dynamic/instance-identity/document", nil)
				r.RemoteAddr = "127.0.0.1:1"
				r.Header.Set("X-aws-ec2-metadata-token", tok)
				w := httptest.NewRecorder()
				e.srv.ServeHTTP(w, r)
				b := w.Body.String()
				ok := w.Code == 200 && (strings.Contains(b, `"us-east-1a"`) && strings.Contains(b, `"region" : "us-east-1"`) ||
					strings.Contains(b, `"us-west-2a"`) && strings.Contains(b, `"region" : "us-west-2"`) ||
					strings.Contains(b, `"ap-south-1a"`) && strings.Contains(b, `"region" : "ap-south-1"`))
				if !ok {
					select {
					case errs <- fmt.Sprintf("%d %s", w.Code, b):
					default:
					}
				}
			}
		})
	}
	for i := range 200 {
		if err := e.srv.Update(cfgs[i%2], e.src); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("inconsistent response: %s", s)
	}
}

package imds

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchWriter is a reusable ResponseWriter, so that allocations counted are
// the handler's own, not the recorder's.
type benchWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(s int)           { w.status = s }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func credRequest(tb testing.TB, e *testEnv) (*http.Request, *benchWriter) {
	r := httptest.NewRequest("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/test-role", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("X-aws-ec2-metadata-token", e.token(tb, "21600"))
	return r, &benchWriter{h: http.Header{}}
}

// BenchmarkCredentialsPath measures the token-validated credential GET in
// the handler alone (token MAC check, source read, cached document).
func BenchmarkCredentialsPath(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{} // the test recorder allocates
	r, w := credRequest(b, e)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		e.srv.ServeHTTP(w, r)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkCredentialsPathHTTP is the same request over loopback, served
// by net/http.Server as the daemon serves it, from a net/http client.
func BenchmarkCredentialsPathHTTP(b *testing.B) {
	e := newEnv(b, baseConfig())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: e.srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	tok := e.token(b, "21600")
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/latest/meta-data/iam/security-credentials/test-role", nil)
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	c := &http.Client{}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkTokenPUT measures issuing one IMDSv2 token in the handler alone.
func BenchmarkTokenPUT(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{} // the test recorder allocates
	r := httptest.NewRequest("PUT", "http://169.254.169.254/latest/api/token", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		e.srv.ServeHTTP(w, r)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkCredentialsPathParallel is the token-validated credential GET in
// the handler alone on every core, to show that concurrent requests share
// no lock.
func BenchmarkCredentialsPathParallel(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{}
	tok := e.token(b, "21600")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/test-role", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-aws-ec2-metadata-token", tok)
		w := &benchWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			e.srv.ServeHTTP(w, r)
			if w.status != 200 {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}

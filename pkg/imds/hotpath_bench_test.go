package imds

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// These complement bench_test.go for make bench (test/bench): the token PUT
// path, and the credential GET with every core at once. They depend only on
// helpers_test.go.

// hotWriter is a reusable ResponseWriter, so that the allocations counted
// are the handler's own.
type hotWriter struct {
	h      http.Header
	status int
}

func (w *hotWriter) Header() http.Header         { return w.h }
func (w *hotWriter) WriteHeader(s int)           { w.status = s }
func (w *hotWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkTokenPUT measures issuing one IMDSv2 token in the handler alone.
func BenchmarkTokenPUT(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{} // the test recorder allocates
	r := httptest.NewRequest("PUT", "http://169.254.169.254/latest/api/token", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
	w := &hotWriter{h: http.Header{}}
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
// no lock and do not allocate.
func BenchmarkCredentialsPathParallel(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{}
	tok := e.token(b, "21600")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/test-role", nil)
		r.RemoteAddr = "127.0.0.1:40000"
		r.Header.Set("X-aws-ec2-metadata-token", tok)
		w := &hotWriter{h: http.Header{}}
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

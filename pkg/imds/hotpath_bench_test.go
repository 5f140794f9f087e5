package imds

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// These complement bench_test.go for make bench (test/bench): the token PUT
// path, and the credential GET with every core at once.

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

// BenchmarkCredentialsPathParallel is BenchmarkCredentialsPath on every
// core, to show that concurrent requests share no lock.
func BenchmarkCredentialsPathParallel(b *testing.B) {
	e := newEnv(b, baseConfig())
	e.srv.obs = NopObserver{}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r, w := credRequest(b, e)
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

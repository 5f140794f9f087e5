package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func doc(code, key, exp string) string {
	return fmt.Sprintf(`{"Code":%q,"LastUpdated":"2026-01-01T11:59:00Z","Type":"AWS-HMAC","AccessKeyId":%q,`+
		`"SecretAccessKey":"s","Token":"t","Expiration":%q}`, code, key, exp)
}

func TestInspect(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct{ name, body string }{
		{"valid", doc("Success", "ASIA1", "2026-01-01T12:00:01Z")},
		{"expires now", doc("Success", "ASIA2", "2026-01-01T12:00:00Z")},
		{"expired", doc("Success", "ASIA3", "2026-01-01T11:00:00Z")},
		{"empty key", doc("Success", "", "2026-01-01T13:00:00Z")},
		{"not success", doc("Failure", "ASIA4", "2026-01-01T13:00:00Z")},
		{"bad expiration", doc("Success", "ASIA5", "tomorrow")},
		{"not json", "<html>"},
		{"empty body", ""},
	}
	var got []string
	for _, c := range cases {
		v, key, age := inspect([]byte(c.body), now)
		got = append(got, fmt.Sprintf("%s: %s %s %v", c.name, v, key, age))
	}
	want := []string{
		"valid: ok ASIA1 1m0s",
		"expires now: expired ASIA2 1m0s",
		"expired: expired ASIA3 1m0s",
		"empty key: empty  0s",
		"not success: empty  0s",
		"bad expiration: empty  0s",
		"not json: empty  0s",
		"empty body: empty  0s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

// fakeIMDS issues tokens and answers credential GETs from a fixed cycle of
// documents, recording the requests it saw as text.
type fakeIMDS struct {
	mu   sync.Mutex
	docs []string
	n    int
	seen []string
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		f.seen = append(f.seen, "PUT ttl="+r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		fmt.Fprintf(w, "token-%d", len(f.seen))
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/latest/meta-data/iam/security-credentials/"):
		f.seen = append(f.seen, "GET "+r.Header.Get("X-aws-ec2-metadata-token"))
		d := f.docs[f.n%len(f.docs)]
		f.n++
		if d == "500" {
			w.WriteHeader(500)
			return
		}
		fmt.Fprint(w, d)
	default:
		w.WriteHeader(404)
	}
}

// The checker must count each kind of bad answer, or its zeros in the
// rotation run would prove nothing.
func TestCheckCountsBadDocuments(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	f := &fakeIMDS{docs: []string{
		doc("Success", "ASIAGOOD1", future),
		doc("Success", "ASIAOLD", "2020-01-01T00:00:00Z"),
		doc("Success", "", future),
		"500",
		doc("Success", "ASIAGOOD2", future),
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	res := check(checkOpts{addr: strings.TrimPrefix(srv.URL, "http://"), host: "169.254.169.254",
		role: "r", conns: 1, requests: 12, every: 6})
	res.Seconds, res.MaxAgeMS = 0, 0
	want := checkResult{Requests: 12, Puts: 2, Gets: 10, Errors: 2, Expired: 2, Empty: 2, DistinctKeys: 3,
		FirstError: "credentials GET: status 500"}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("check result (-want +got):\n%s", diff)
	}
	// After the 500 the checker reconnects and still uses its token; the
	// second PUT comes at request 6 (every 6th).
	wantSeen := []string{"PUT ttl=21600", "GET token-1", "GET token-1", "GET token-1", "GET token-1", "GET token-1",
		"PUT ttl=21600", "GET token-7", "GET token-7", "GET token-7", "GET token-7", "GET token-7"}
	if diff := cmp.Diff(wantSeen, f.seen); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

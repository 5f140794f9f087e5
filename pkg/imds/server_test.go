package imds

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imds-shim/imds-shim/pkg/credentials"
)

// tokenState is what X-aws-ec2-metadata-token carries in a table row.
type tokenState int

const (
	tokNone tokenState = iota
	tokValid
	tokExpired
	tokTampered
	tokGarbage
	tokOtherKey
	tokEmpty
)

func (s tokenState) String() string {
	return [...]string{"no-token", "valid", "expired", "tampered", "garbage", "other-key", "empty"}[s]
}

// tokenFor builds a token in the given state, valid for 60 s from the env's
// clock unless expired.
func tokenFor(t *testing.T, e *testEnv, s tokenState) (string, bool) {
	t.Helper()
	switch s {
	case tokNone:
		return "", false
	case tokEmpty:
		return "", true
	case tokValid:
		return e.token(t, "60"), true
	case tokExpired:
		k, _ := newTokenKey(testKey)
		tok, _ := k.issue(e.clock.Now().Add(-time.Second), "")
		return tok, true
	case tokTampered:
		tok := []byte(e.token(t, "60"))
		tok[20] ^= 1 // flips a bit of the expiry or nonce; the MAC no longer matches
		return string(tok), true
	case tokGarbage:
		return "AQAAAAAAAAAA not a token", true
	case tokOtherKey:
		k, _ := newTokenKey([]byte("another key of thirty-two bytes!"))
		tok, _ := k.issue(e.clock.Now().Add(time.Minute), "")
		return tok, true
	}
	t.Fatalf("unknown token state %d", s)
	return "", false
}

func TestServeTable(t *testing.T) {
	const credsPath = "/latest/meta-data/iam/security-credentials/test-role"
	type row struct {
		mode   TokenMode
		method string
		path   string
		tok    tokenState
		hdr    map[string]string
		want   int
		body   string // checked when non-empty
	}
	rows := []row{
		// Token modes × token states on a credential path.
		{TokenRequired, "GET", credsPath, tokNone, nil, 401, ""},
		{TokenRequired, "GET", credsPath, tokValid, nil, 200, ""},
		{TokenRequired, "GET", credsPath, tokExpired, nil, 401, ""},
		{TokenRequired, "GET", credsPath, tokTampered, nil, 401, ""},
		{TokenRequired, "GET", credsPath, tokGarbage, nil, 401, ""},
		{TokenRequired, "GET", credsPath, tokOtherKey, nil, 401, ""},
		{TokenRequired, "GET", credsPath, tokEmpty, nil, 401, ""},
		{TokenOptional, "GET", credsPath, tokNone, nil, 200, ""},
		{TokenOptional, "GET", credsPath, tokValid, nil, 200, ""},
		{TokenOptional, "GET", credsPath, tokExpired, nil, 401, ""},
		{TokenOptional, "GET", credsPath, tokTampered, nil, 401, ""},
		{TokenOptional, "GET", credsPath, tokGarbage, nil, 401, ""},
		{TokenOptional, "GET", credsPath, tokOtherKey, nil, 401, ""},
		{TokenOptional, "GET", credsPath, tokEmpty, nil, 200, ""},
		// Auth comes before routing: unknown paths are 401 without a token.
		{TokenRequired, "GET", "/latest/meta-data/nope", tokNone, nil, 401, ""},
		{TokenRequired, "GET", "/latest/meta-data/nope", tokValid, nil, 404, ""},
		{TokenOptional, "GET", "/latest/meta-data/nope", tokNone, nil, 404, ""},
		{TokenRequired, "GET", "/", tokNone, nil, 401, ""},
		// Listings and leaves, with and without trailing slash, versioned.
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials/", tokValid, nil, 200, "test-role"},
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials", tokValid, nil, 200, "test-role"},
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials-extended/", tokValid, nil, 200, "test-role"},
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials-extended", tokValid, nil, 200, "test-role"},
		{TokenRequired, "GET", "/latest/meta-data/iam/", tokValid, nil, 200, "info\nsecurity-credentials/"},
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials/other-role", tokValid, nil, 404, ""},
		{TokenRequired, "GET", "/latest/meta-data/iam/security-credentials-extended/other-role", tokValid, nil, 404, ""},
		{TokenRequired, "GET", credsPath + "/", tokValid, nil, 200, ""},
		{TokenRequired, "GET", "/2021-07-15/meta-data/iam/security-credentials/", tokValid, nil, 200, "test-role"},
		{TokenRequired, "GET", "/1.0/meta-data/instance-type", tokValid, nil, 200, "on-prem"},
		{TokenRequired, "GET", "/1999-01-01/meta-data/instance-type", tokValid, nil, 404, ""},
		{TokenRequired, "GET", "//latest/meta-data/instance-type", tokValid, nil, 200, "on-prem"},
		{TokenRequired, "GET", "/latest/meta-data/placement/availability-zone/", tokValid, nil, 200, "us-east-1a"},
		{TokenRequired, "GET", "/latest/meta-data/placement/availability-zone", tokValid, nil, 200, "us-east-1a"},
		{TokenRequired, "GET", "/latest/meta-data/placement/region", tokValid, nil, 200, "us-east-1"},
		{TokenRequired, "GET", "/latest/meta-data/placement/availability-zone-id", tokValid, nil, 200, "use1-az1"},
		{TokenRequired, "GET", "/latest/meta-data/placement", tokValid, nil, 200, "availability-zone\navailability-zone-id\nregion"},
		{TokenRequired, "GET", "/latest/meta-data/services/partition", tokValid, nil, 200, "aws"},
		{TokenRequired, "GET", "/latest/meta-data/services/domain", tokValid, nil, 200, "amazonaws.com"},
		{TokenRequired, "GET", "/latest/meta-data/hostname", tokValid, nil, 200, "build-07.example.internal"},
		{TokenRequired, "GET", "/latest/meta-data/local-ipv4", tokValid, nil, 200, "10.20.30.40"},
		{TokenRequired, "GET", "/latest/meta-data/mac", tokValid, nil, 200, "02:42:ac:11:00:02"},
		{TokenRequired, "GET", "/latest/meta-data/network/interfaces/macs/", tokValid, nil, 200, "02:42:ac:11:00:02/"},
		{TokenRequired, "GET", "/latest/meta-data/instance-id", tokValid, nil, 200, "i-" + derivedHex("instance-id", testHost.MachineID, 17)},
		{TokenRequired, "GET", "/latest/user-data", tokValid, nil, 404, ""},
		{TokenRequired, "GET", "/latest/meta-data/tags/instance", tokValid, nil, 404, ""},
		{TokenRequired, "GET", "/latest/", tokValid, nil, 200, "dynamic\nmeta-data\nuser-data"},
		{TokenRequired, "GET", "/latest", tokValid, nil, 200, "dynamic\nmeta-data\nuser-data"},
		{TokenRequired, "GET", "/latest/dynamic/", tokValid, nil, 200, "instance-identity/"},
		{TokenRequired, "GET", "/latest/dynamic/instance-identity", tokValid, nil, 200, "document"},
		{TokenRequired, "GET", "/latest/dynamic/instance-identity/pkcs7", tokValid, nil, 404, ""},
		{TokenRequired, "HEAD", credsPath, tokValid, nil, 200, ""},
		{TokenRequired, "HEAD", credsPath, tokNone, nil, 401, ""},
		// Methods.
		{TokenRequired, "POST", credsPath, tokValid, nil, 405, ""},
		{TokenRequired, "DELETE", "/latest/meta-data/", tokValid, nil, 405, ""},
		{TokenRequired, "PUT", "/latest/meta-data/", tokValid, nil, 405, ""},
		{TokenRequired, "GET", "/latest/api/token", tokValid, nil, 405, ""},
		{TokenRequired, "POST", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}, 405, ""},
		{TokenRequired, "HEAD", "/latest/api/token", tokNone, nil, 405, ""},
		// Token PUT.
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, 200, ""},
		{TokenRequired, "PUT", "/latest/api/token/", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "1"}, 403, ""}, // EC2: fidelity_test.go
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "0"}, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "-5"}, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "6e2"}, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": ""}, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, nil, 400, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "203.0.113.9"}, 403, ""},
		{TokenOptional, "PUT", "/latest/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "203.0.113.9"}, 403, ""},
		{TokenRequired, "PUT", "/2021-03-23/api/token", tokNone, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}, 403, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokValid, map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}, 200, ""},
		// Source allowlist and Host check (both 403, before anything else).
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "10.9.9.9:1234"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "169.254.169.254:5555"}, 200, ""},
		// A neighbour claiming 169.254.169.254 on a listener reachable from the network.
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "169.254.169.254:5555", "LocalAddr": "192.0.2.10:8254"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "169.254.169.254:5555", "LocalAddr": "169.254.169.254:80"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "[::1]:5555"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "[::ffff:127.0.0.1]:5555"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "[fd00:ec2::254]:5555"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"RemoteAddr": "172.17.0.5:5555"}, 200, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"RemoteAddr": "10.9.9.9:1234", "X-aws-ec2-metadata-token-ttl-seconds": "60"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "evil.example.com"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "evil.example.com:80"}, 403, ""},
		{TokenRequired, "PUT", "/latest/api/token", tokNone, map[string]string{"Host": "rebind.attacker.test", "X-aws-ec2-metadata-token-ttl-seconds": "60"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "10.1.2.3"}, 403, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "169.254.169.254:80"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "[fd00:ec2::254]"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "127.0.0.1:39123"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "LocalHost:8254"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "[::1]:8254"}, 200, ""},
		{TokenOptional, "GET", credsPath, tokNone, map[string]string{"Host": "imds.internal:8254"}, 200, ""},
	}
	for _, r := range rows {
		name := fmt.Sprintf("%s/%s %s/%s/%v", r.mode, r.method, r.path, r.tok, r.hdr)
		t.Run(name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.TokenMode = r.mode
			cfg.AllowedCIDRs = []netip.Prefix{netip.MustParsePrefix("172.17.0.0/16")}
			cfg.AllowedHosts = []string{"imds.internal"}
			e := newEnv(t, cfg)
			hdr := map[string]string{}
			for k, v := range r.hdr {
				hdr[k] = v
			}
			if tok, ok := tokenFor(t, e, r.tok); ok {
				hdr["X-aws-ec2-metadata-token"] = tok
			}
			w := e.do(r.method, r.path, hdr)
			if w.Code != r.want {
				t.Fatalf("status = %d, want %d; body %q", w.Code, r.want, w.Body.String())
			}
			if r.body != "" && w.Body.String() != r.body {
				t.Errorf("body = %q, want %q", w.Body.String(), r.body)
			}
			if got := w.Header().Get("Server"); got != "EC2ws" {
				t.Errorf("Server = %q, want EC2ws", got)
			}
			// EC2 serves its 404 page as text/html (fidelity_test.go).
			wantCT := "text/plain"
			if r.want == 404 {
				wantCT = "text/html"
			}
			if ct := w.Header().Get("Content-Type"); ct != wantCT {
				t.Errorf("Content-Type = %q, want %s", ct, wantCT)
			}
			if r.want == 403 && w.Body.Len() != 0 {
				t.Errorf("403 body = %q, want empty as on EC2", w.Body.String())
			}
			if r.want != 200 && r.want != 403 {
				want := fmt.Sprintf("<h1>%d - ", r.want)
				if r.method != "HEAD" && !strings.Contains(w.Body.String(), want) {
					t.Errorf("error body lacks %q: %q", want, w.Body.String())
				}
			}
			if r.method == "HEAD" && w.Body.Len() != 0 {
				t.Errorf("HEAD body = %q, want empty", w.Body.String())
			}
			// A valid token's remaining TTL comes back on GETs; a PUT echoes
			// the granted TTL; errors carry none.
			ttl := w.Header().Get("X-aws-ec2-metadata-token-ttl-seconds")
			switch {
			case r.want != 200 && ttl != "":
				t.Errorf("error response carries TTL header %q", ttl)
			case r.method == "PUT" && r.want == 200 && ttl != r.hdr["X-aws-ec2-metadata-token-ttl-seconds"]:
				t.Errorf("PUT TTL header = %q, want %q", ttl, r.hdr["X-aws-ec2-metadata-token-ttl-seconds"])
			case r.method != "PUT" && r.want == 200 && r.tok == tokValid && ttl != "60":
				t.Errorf("remaining TTL header = %q, want 60", ttl)
			case r.method != "PUT" && r.want == 200 && r.tok != tokValid && ttl != "":
				t.Errorf("tokenless response carries TTL header %q", ttl)
			}
			if r.want == 200 && strings.HasSuffix(w.Body.String(), "\n") {
				t.Errorf("body ends with LF: %q", w.Body.String())
			}
			if w.Code == 405 && w.Header().Get("Allow") == "" {
				t.Errorf("405 without Allow header")
			}
		})
	}
}

func TestTokenLifecycle(t *testing.T) {
	e := newEnv(t, baseConfig())
	w := e.do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "10"})
	tok := w.Body.String()
	if len(tok) != tokenLen || strings.ContainsAny(tok, "\r\n =") {
		t.Fatalf("token %q: want %d header-safe characters", tok, tokenLen)
	}
	if tok2 := e.token(t, "10"); tok2 == tok {
		t.Errorf("two tokens are identical: %q", tok)
	}
	get := func() (int, string) {
		w := e.do("GET", "/latest/meta-data/instance-type", map[string]string{"X-aws-ec2-metadata-token": tok})
		return w.Code, w.Header().Get("X-aws-ec2-metadata-token-ttl-seconds")
	}
	var got []string
	for _, step := range []time.Duration{0, 4500 * time.Millisecond, 5 * time.Second, 499 * time.Millisecond, time.Millisecond} {
		e.clock.Advance(step)
		code, ttl := get()
		got = append(got, fmt.Sprintf("t+%v: %d ttl=%q", e.clock.Now().Sub(t0), code, ttl))
	}
	want := []string{
		`t+0s: 200 ttl="10"`,
		`t+4.5s: 200 ttl="6"`,
		`t+9.5s: 200 ttl="1"`,
		`t+9.999s: 200 ttl="1"`,
		`t+10s: 401 ttl=""`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("token over time (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff("token issued\nrequest token OK\ntoken issued\nrequest token OK\n"+
		"request metadata OK\nrequest metadata OK\nrequest metadata OK\nrequest metadata OK\nrequest metadata Unauthorized",
		e.obs.String()); diff != "" {
		t.Errorf("observer (-want +got):\n%s", diff)
	}
}

func TestCredentialsUnavailable(t *testing.T) {
	const path = "/latest/meta-data/iam/security-credentials/test-role"
	const ext = "/latest/meta-data/iam/security-credentials-extended/test-role"
	expired := testCreds(1)
	expired.Expires = t0
	other := testCreds(1)
	other.RoleARN = "arn:aws:iam::123456789012:role/another"
	empty := testCreds(1)
	empty.SessionToken = ""
	for _, tc := range []struct {
		name  string
		creds credentials.Credentials
		err   error
		want  string
	}{
		{"source error", credentials.Credentials{}, fmt.Errorf("refreshing: %w", credentials.ErrNoCredentials), "refreshing: no valid credentials"},
		{"expired set", expired, nil, errExpired.Error()},
		{"other role", other, nil, errNoRole.Error()},
		{"empty token", empty, nil, errIncomplete.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.TokenMode = TokenOptional
			e := newEnv(t, cfg)
			e.src.set(tc.creds, tc.err)
			for _, p := range []string{path, ext} {
				w := e.do("GET", p, nil)
				if w.Code != 500 {
					t.Errorf("GET %s: status %d, want 500", p, w.Code)
				}
				if b := w.Body.String(); strings.Contains(b, "Success") || strings.Contains(b, tc.want) {
					t.Errorf("GET %s: body reveals state: %q", p, b)
				}
			}
			// The listing still names the role, and iam/info still answers.
			if w := e.do("GET", "/latest/meta-data/iam/security-credentials/", nil); w.Code != 200 || w.Body.String() != "test-role" {
				t.Errorf("listing: %d %q", w.Code, w.Body.String())
			}
			if w := e.do("GET", "/latest/meta-data/iam/info", nil); w.Code != 200 {
				t.Errorf("iam/info: %d", w.Code)
			}
			want := "unavailable: " + tc.want + "\nrequest credentials Internal Server Error\n" +
				"unavailable: " + tc.want + "\nrequest credentials Internal Server Error\n" +
				"request credentials OK\nrequest credentials OK"
			if diff := cmp.Diff(want, e.obs.String()); diff != "" {
				t.Errorf("observer (-want +got):\n%s", diff)
			}
			// Recovery: a good set is served again.
			e.src.set(testCreds(2), nil)
			if w := e.do("GET", path, nil); w.Code != 200 || !strings.Contains(w.Body.String(), testCreds(2).AccessKeyID) {
				t.Errorf("after recovery: %d %q", w.Code, w.Body.String())
			}
		})
	}
}

func TestCredentialDocsFollowSet(t *testing.T) {
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	e := newEnv(t, cfg)
	get := func() string {
		return e.do("GET", "/latest/meta-data/iam/security-credentials/test-role", nil).Body.String()
	}
	first := get()
	if !strings.Contains(first, testCreds(1).AccessKeyID) {
		t.Fatalf("first body lacks key 1: %q", first)
	}
	if again := get(); again != first {
		t.Errorf("same set rendered differently")
	}
	e.src.set(testCreds(2), nil)
	second := get()
	if !strings.Contains(second, testCreds(2).AccessKeyID) || strings.Contains(second, testCreds(1).AccessKeyID) {
		t.Errorf("after rotation body = %q", second)
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t, baseConfig())
	tok := e.token(t, "300")
	auth := map[string]string{"X-aws-ec2-metadata-token": tok}

	cfg := baseConfig()
	cfg.RoleARN = "arn:aws:iam::210987654321:role/ops/renamed"
	cfg.Region = "eu-west-1"
	cfg.TokenMode = TokenOptional
	src2 := &fakeSource{creds: testCreds(3)}
	src2.creds.RoleARN = cfg.RoleARN
	src2.creds.AccountID = "210987654321"
	if err := e.srv.Update(cfg, src2); err != nil {
		t.Fatalf("Update: %v", err)
	}
	var got []string
	for _, p := range []string{
		"/latest/meta-data/iam/security-credentials/",
		"/latest/meta-data/placement/availability-zone",
		"/latest/meta-data/iam/security-credentials/test-role",
	} {
		w := e.do("GET", p, auth)
		got = append(got, fmt.Sprintf("%s %d %s", p, w.Code, w.Body.String()))
	}
	w := e.do("GET", "/latest/meta-data/iam/security-credentials/renamed", auth)
	got = append(got, fmt.Sprintf("renamed %d key3=%v", w.Code, strings.Contains(w.Body.String(), testCreds(3).AccessKeyID)))
	w = e.do("GET", "/latest/meta-data/placement/region", nil) // optional mode now
	got = append(got, fmt.Sprintf("tokenless %d %s", w.Code, w.Body.String()))
	want := []string{
		"/latest/meta-data/iam/security-credentials/ 200 renamed",
		"/latest/meta-data/placement/availability-zone 200 eu-west-1a",
		"/latest/meta-data/iam/security-credentials/test-role 404 " + string(errorPage(404).body),
		"renamed 200 key3=true",
		"tokenless 200 eu-west-1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after Update (-want +got):\n%s", diff)
	}

	// A bad config is refused and changes nothing.
	bad := cfg
	bad.TokenMode = "sometimes"
	bad.HopLimit = 65
	err := e.srv.Update(bad, src2)
	if err == nil {
		t.Fatal("Update accepted an invalid config")
	}
	for _, want := range []string{`TokenMode: "sometimes"`, `HopLimit: 65`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if w := e.do("GET", "/latest/meta-data/placement/region", nil); w.Code != 200 || w.Body.String() != "eu-west-1" {
		t.Errorf("after refused Update: %d %q", w.Code, w.Body.String())
	}
	if err := e.srv.Update(cfg, nil); err == nil {
		t.Error("Update accepted a nil source")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; empty means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"full", func(c *Config) {
			c.TokenMode, c.HopLimit, c.Region, c.AvailabilityZone = TokenOptional, 2, "eu-central-1", "eu-central-1b"
			c.AvailabilityZoneID, c.InstanceID, c.ImageID = "euc1-az3", "i-0123456789abcdef0", "ami-0abcdef1234567890"
			c.MAC, c.LocalIPv4, c.Architecture = "02:00:00:AA:bb:cc", netip.MustParseAddr("192.0.2.10"), "arm64"
			c.Tags = map[string]string{"Name": "build box", "team:owner": ""}
			c.Overrides = map[string]string{"meta-data/public-keys/0/openssh-key": "ssh-ed25519 AAAA"}
		}, ""},
		{"no role", func(c *Config) { c.RoleARN = "" }, "RoleARN: "},
		{"user ARN", func(c *Config) { c.RoleARN = "arn:aws:iam::123456789012:user/bob" }, "does not start with role/"},
		{"bad account", func(c *Config) { c.RoleARN = "arn:aws:iam::12345:role/x" }, "not 12 digits"},
		{"bad partition", func(c *Config) { c.RoleARN = "arn:azure:iam::123456789012:role/x" }, `partition "azure"`},
		{"mode", func(c *Config) { c.TokenMode = "v1" }, `TokenMode: "v1"`},
		{"hop", func(c *Config) { c.HopLimit = 65 }, "HopLimit: 65"},
		{"ipv4", func(c *Config) { c.LocalIPv4 = netip.MustParseAddr("::1") }, "not an IPv4"},
		{"tag slash", func(c *Config) { c.Tags = map[string]string{"a/b": "x"} }, "Tags: key"},
		{"tag newline", func(c *Config) { c.Tags = map[string]string{"a": "x\ny"} }, "control characters"},
		{"override iam", func(c *Config) { c.Overrides = map[string]string{"meta-data/iam/info": "{}"} }, "reserved"},
		{"override traversal", func(c *Config) { c.Overrides = map[string]string{"meta-data/../x": "1"} }, "starts with '.'"},
		{"override top", func(c *Config) { c.Overrides = map[string]string{"secrets/x": "1"} }, "top level"},
		{"host", func(c *Config) { c.AllowedHosts = []string{"bad host"} }, "AllowedHosts: "},
		{"host at 253 bytes", func(c *Config) { c.AllowedHosts = []string{strings.Repeat("h", 253)} }, ""},
		{"host over 253 bytes", func(c *Config) { c.AllowedHosts = []string{strings.Repeat("h", 254)} }, "AllowedHosts: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := baseConfig()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want error containing %q", err, tc.want)
			}
		})
	}
	// Every problem is reported at once.
	c := Config{TokenMode: "x", HopLimit: -1}
	if err := c.Validate(); err == nil || len(strings.Split(err.Error(), "\n")) != 3 {
		t.Errorf("Validate joined = %v, want 3 problems", err)
	}
}

func TestNewServerErrors(t *testing.T) {
	if _, err := NewServer(baseConfig(), &fakeSource{}, Options{TokenKey: []byte("short"), Host: &HostFacts{}}); err == nil || !strings.Contains(err.Error(), "token key has 5 bytes") {
		t.Errorf("short key: %v", err)
	}
	if _, err := NewServer(Config{}, &fakeSource{}, Options{Host: &HostFacts{}}); err == nil {
		t.Error("empty config accepted")
	}
}

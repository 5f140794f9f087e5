package imds

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"

	"github.com/imds-shim/imds-shim/pkg/callers"
	"github.com/imds-shim/imds-shim/pkg/credentials"
)

// benchSTS issues a fresh one-hour set on every call.
type benchSTS struct{}

func (benchSTS) AssumeRole(context.Context, *sts.AssumeRoleInput, ...func(*sts.Options)) (*sts.AssumeRoleOutput, error) {
	return &sts.AssumeRoleOutput{Credentials: &types.Credentials{AccessKeyId: aws.String("ASIABENCH"),
		SecretAccessKey: aws.String("secret"), SessionToken: aws.String("token"), Expiration: aws.Time(time.Now().Add(time.Hour))}}, nil
}

func (benchSTS) AssumeRoleWithWebIdentity(context.Context, *sts.AssumeRoleWithWebIdentityInput, ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	panic("unused")
}

// setRoles is what the daemon hands the handler with roles: the Set, asked
// for the caller the connection's context carries.
type setRoles struct{ set *credentials.Set }

func (s setRoles) Current() (credentials.Credentials, error) { return s.set.Current() }

func (s setRoles) RoleFor(r *http.Request) (string, CredentialSource, bool) {
	c, _ := callers.FromContext(r.Context())
	arn, src, ok := s.set.For(c)
	if !ok {
		return "", nil, false
	}
	return arn, src, true
}

// newRolesBench is a server with three roles entries and a default, the
// caller matching the last entry (the longest match), tokens bound to it.
func newRolesBench(b *testing.B) *Server {
	pol, err := callers.NewPolicy([]callers.Entry{
		{Role: "roles[0]", Units: []string{"backup.service"}},
		{Role: "roles[1]", Users: []string{"www-data"}, Groups: []string{"web"}},
		{Role: "roles[2]", Users: []string{"65534"}},
	}, callers.Default{Role: "role_arn"})
	if err != nil {
		b.Fatal(err)
	}
	cfg := func(a string) credentials.Config { return credentials.Config{RoleARN: a, SessionName: "bench"} }
	set, err := credentials.NewSet(b.Context(), []credentials.Role{
		{Key: "role_arn", Config: cfg(hostARN)},
		{Key: "roles[0]", Config: cfg("arn:aws:iam::123456789012:role/backup")},
		{Key: "roles[1]", Config: cfg("arn:aws:iam::123456789012:role/www")},
		{Key: "roles[2]", Config: cfg(webARN)},
	}, credentials.SetOptions{Policy: pol, NewClient: func(context.Context, credentials.Config) (credentials.STSAPI, error) { return benchSTS{}, nil }})
	if err != nil {
		b.Fatal(err)
	}
	if err := set.Fetch(b.Context()); err != nil {
		b.Fatal(err)
	}
	host := testHost
	srv, err := NewServer(Config{RoleARN: hostARN, Roles: set.ARNs()[1:]}, setRoles{set}, Options{
		TokenKey: testKey, Host: &host,
		TokenBinding: func(r *http.Request) string { c, _ := callers.FromContext(r.Context()); return c.Key() },
	})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// BenchmarkCredentialsPathRoles is BenchmarkCredentialsPath with roles
// configured: policy match, the role's refresher, the audit check and the
// caller-bound token.
func BenchmarkCredentialsPathRoles(b *testing.B) {
	srv := newRolesBench(b)
	tok := as(srv, &nobodyCaller, http.MethodPut, "/latest/api/token", "").Body.String()
	r := httptest.NewRequest("GET", "http://169.254.169.254/latest/meta-data/iam/security-credentials/web", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	r.Header.Set(hToken, tok)
	r = r.WithContext(callers.NewContext(r.Context(), nobodyCaller))
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		srv.ServeHTTP(w, r)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkCredentialsPathHTTPRoles is BenchmarkCredentialsPathHTTP with
// roles: keep-alive over loopback, each connection identified once by the
// real Identifier (sock_diag) in its first request, lazily, as the daemon
// does. Without the kernel's answer (no sock_diag here) it is skipped.
func BenchmarkCredentialsPathHTTPRoles(b *testing.B) {
	srv := newRolesBench(b)
	id := callers.NewIdentifier()
	defer id.Close()
	if _, err := id.SelfTest(); err != nil {
		b.Skipf("caller identification unavailable: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	type lazy func() callers.Caller
	type key struct{}
	hs := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, key{}, lazy(sync.OnceValue(func() callers.Caller { return id.Identify(c) })))
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := r.Context().Value(key{}).(lazy)()
			// This process is root: serve it as the benchmark's nobody,
			// so that the request takes the last entry's path.
			if c.Kind == callers.Host {
				c = nobodyCaller
			}
			srv.ServeHTTP(w, r.WithContext(callers.NewContext(r.Context(), c)))
		}),
	}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	tok := as(srv, &nobodyCaller, http.MethodPut, "/latest/api/token", "").Body.String()
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/latest/meta-data/iam/security-credentials/web", nil)
	req.Header.Set(hToken, tok)
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

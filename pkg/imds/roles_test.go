package imds

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/imds-shim/imds-shim/pkg/callers"
	"github.com/imds-shim/imds-shim/pkg/credentials"
)

const (
	hostARN = "arn:aws:iam::123456789012:role/host"
	webARN  = "arn:aws:iam::210987654321:role/svc/web"
)

// callerRoles is an injected Roles: the caller comes from the request's
// context (as the daemon's ConnContext stores it), its role from a table
// by caller key.
type callerRoles struct {
	byKey map[string]string
	src   map[string]*fakeSource
}

func (c *callerRoles) Current() (credentials.Credentials, error) { return c.src[hostARN].Current() }

func (c *callerRoles) RoleFor(r *http.Request) (string, CredentialSource, bool) {
	caller, _ := callers.FromContext(r.Context())
	arn, ok := c.byKey[caller.Key()]
	if !ok {
		return "", nil, false
	}
	return arn, c.src[arn], true
}

var (
	rootCaller   = callers.Caller{Kind: callers.Host, UID: 0, User: "root"}
	nobodyCaller = callers.Caller{Kind: callers.Host, UID: 65534, User: "nobody"}
	strayCaller  = callers.Caller{Kind: callers.Host, UID: 1234}
)

func credsFor(arn, account, key string) credentials.Credentials {
	c := testCreds(1)
	c.RoleARN, c.AccountID, c.AccessKeyID = arn, account, key
	return c
}

func newRolesEnv(t *testing.T) *Server {
	t.Helper()
	roles := &callerRoles{
		byKey: map[string]string{rootCaller.Key(): hostARN, nobodyCaller.Key(): webARN},
		src: map[string]*fakeSource{
			hostARN: {creds: credsFor(hostARN, "123456789012", "ASIAHOST")},
			webARN:  {creds: credsFor(webARN, "210987654321", "ASIAWEB")},
		},
	}
	host := testHost
	clock := &fakeClock{now: t0}
	srv, err := NewServer(Config{RoleARN: hostARN, Roles: []string{webARN}}, roles, Options{
		TokenKey:     testKey,
		Now:          clock.Now,
		Host:         &host,
		TokenBinding: func(r *http.Request) string { c, _ := callers.FromContext(r.Context()); return c.Key() },
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// as sends a request from caller, as the daemon would after identifying
// its connection.
func as(srv *Server, caller *callers.Caller, method, path, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://169.254.169.254"+path, nil)
	r.RemoteAddr = "169.254.169.254:40000"
	ctx := context.WithValue(r.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort("169.254.169.254:254")))
	if caller != nil {
		ctx = callers.NewContext(ctx, *caller)
	}
	r = r.WithContext(ctx)
	if method == http.MethodPut {
		r.Header.Set(hTokenTTL, "60")
	}
	if token != "" {
		r.Header.Set(hToken, token)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	return w
}

func tokenAs(t *testing.T, srv *Server, c *callers.Caller) string {
	t.Helper()
	w := as(srv, c, http.MethodPut, "/latest/api/token", "")
	if w.Code != 200 {
		t.Fatalf("token as %v: %d", c, w.Code)
	}
	return w.Body.String()
}

func TestRolesEachCallerSeesOnlyItsOwn(t *testing.T) {
	srv := newRolesEnv(t)
	const sc = "/latest/meta-data/iam/security-credentials/"
	for _, tc := range []struct {
		caller  *callers.Caller
		role    string // its role's name, "" for none
		key     string
		profile string
		account string
	}{
		{&rootCaller, "host", "ASIAHOST", "arn:aws:iam::123456789012:instance-profile/host", "123456789012"},
		{&nobodyCaller, "web", "ASIAWEB", "arn:aws:iam::210987654321:instance-profile/svc/web", "210987654321"},
		{&strayCaller, "", "", "", "123456789012"},
		{nil, "", "", "", "123456789012"}, // not identified at all
	} {
		tok := tokenAs(t, srv, tc.caller)
		get := func(p string) *httptest.ResponseRecorder { return as(srv, tc.caller, http.MethodGet, p, tok) }
		who := "no caller"
		if tc.caller != nil {
			who = tc.caller.String()
		}
		listing := get("/latest/meta-data/").Body.String()
		if hasIAM := strings.Contains("\n"+listing+"\n", "\niam/\n"); hasIAM != (tc.role != "") || !strings.Contains(listing, "instance-id") {
			t.Errorf("%s: meta-data/ lists iam/: %v, want %v (EC2 lists it only with a profile):\n%s", who, hasIAM, tc.role != "", listing)
		}
		if tc.role == "" {
			for _, p := range []string{sc, "/latest/meta-data/iam/", "/latest/meta-data/iam/info", sc + "host", sc + "web",
				"/latest/meta-data/iam/security-credentials-extended/host"} {
				if w := get(p); w.Code != http.StatusNotFound {
					t.Errorf("%s: GET %s = %d, want 404 (no role, as EC2 without an instance profile)", who, p, w.Code)
				}
			}
		} else {
			if w := get(sc); w.Code != 200 || w.Body.String() != tc.role {
				t.Errorf("%s: listing = %d %q, want exactly %q", who, w.Code, w.Body.String(), tc.role)
			}
			w := get(sc + tc.role)
			var doc struct{ AccessKeyId, Code string }
			if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &doc) != nil || doc.AccessKeyId != tc.key {
				t.Errorf("%s: its role's document = %d %s, want key %s", who, w.Code, w.Body.String(), tc.key)
			}
			for _, other := range []string{"host", "web", "nope"} {
				if other == tc.role {
					continue
				}
				if w := get(sc + other); w.Code != http.StatusNotFound {
					t.Errorf("%s: GET another role %s = %d, want 404", who, other, w.Code)
				}
				if w := get("/latest/meta-data/iam/security-credentials-extended/" + other); w.Code != http.StatusNotFound {
					t.Errorf("%s: extended document of %s = %d, want 404", who, other, w.Code)
				}
			}
			var ext struct{ AccountId string }
			if w := get("/latest/meta-data/iam/security-credentials-extended/" + tc.role); w.Code != 200 ||
				json.Unmarshal(w.Body.Bytes(), &ext) != nil || ext.AccountId != tc.account {
				t.Errorf("%s: extended document = %d %s, want account %s", who, w.Code, w.Body.String(), tc.account)
			}
			var info struct{ InstanceProfileArn string }
			if w := get("/latest/meta-data/iam/info"); w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &info) != nil || info.InstanceProfileArn != tc.profile {
				t.Errorf("%s: iam/info = %d %s, want profile %s", who, w.Code, w.Body.String(), tc.profile)
			}
			if w := get("/latest/meta-data/iam/"); w.Code != 200 || w.Body.String() != "info\nsecurity-credentials/" {
				t.Errorf("%s: iam/ = %d %q", who, w.Code, w.Body.String())
			}
		}
		var id struct{ AccountId string }
		if w := get("/latest/dynamic/instance-identity/document"); w.Code != 200 ||
			json.Unmarshal(w.Body.Bytes(), &id) != nil || id.AccountId != tc.account {
			t.Errorf("%s: identity document = %d %s, want accountId %s", who, w.Code, w.Body.String(), tc.account)
		}
	}
}

func TestRolesTokenBoundToCaller(t *testing.T) {
	srv := newRolesEnv(t)
	tok := tokenAs(t, srv, &rootCaller)
	if w := as(srv, &rootCaller, http.MethodGet, "/latest/meta-data/instance-id", tok); w.Code != 200 {
		t.Fatalf("root's own token: %d", w.Code)
	}
	for _, c := range []*callers.Caller{&nobodyCaller, &strayCaller, nil,
		{Kind: callers.Host, UID: 0, User: "root", Unit: "backup.service"}} {
		if w := as(srv, c, http.MethodGet, "/latest/meta-data/instance-id", tok); w.Code != http.StatusUnauthorized {
			t.Errorf("root's token replayed by %v: %d, want 401", c, w.Code)
		}
	}
	// The role listing of a replayed token is refused before any role is
	// looked at.
	if w := as(srv, &nobodyCaller, http.MethodGet, "/latest/meta-data/iam/security-credentials/host", tok); w.Code != http.StatusUnauthorized {
		t.Errorf("root's token for root's role, replayed by nobody: %d, want 401", w.Code)
	}
}

func TestRolesFailingRoleIs500(t *testing.T) {
	srv := newRolesEnv(t)
	st := srv.state.Load()
	st.roles.(*callerRoles).src[webARN].set(credentials.Credentials{}, credentials.ErrNoCredentials)
	tok := tokenAs(t, srv, &nobodyCaller)
	if w := as(srv, &nobodyCaller, http.MethodGet, "/latest/meta-data/iam/security-credentials/web", tok); w.Code != http.StatusInternalServerError {
		t.Errorf("failing role: %d, want 500", w.Code)
	}
	tok = tokenAs(t, srv, &rootCaller)
	if w := as(srv, &rootCaller, http.MethodGet, "/latest/meta-data/iam/security-credentials/host", tok); w.Code != 200 {
		t.Errorf("the other role while web fails: %d, want 200", w.Code)
	}
	if !strings.Contains(hostARN, "host") {
		t.Fatal("unreachable")
	}
}

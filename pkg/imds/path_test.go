package imds

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzPath sends arbitrary methods and paths and checks the invariants that
// must hold for any request: no panic, a status from the fixed set, EC2
// headers, no trailing LF on success, a 200 only for an entry that exists,
// and nothing served without a token in required mode.
func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/latest", "/latest/", "/latest/meta-data/iam/security-credentials/test-role",
		"/latest/meta-data/iam/security-credentials-extended/test-role/", "//latest//meta-data",
		"/latest/../latest/meta-data", "/2021-07-15/api/token", "/latest/api/token", "/latest/user-data",
		"/latest/meta-data/%2e%2e/iam", "/latest/dynamic/instance-identity/document", "/x/y/z",
		"/latest/meta-data/tags/instance/Name", "/latest/meta-data/\x00", "/latest/meta-data/placement/",
	} {
		f.Add("GET", s, true)
		f.Add("PUT", s, false)
	}
	f.Add("PROPFIND", "/latest/meta-data", true)
	e := newEnv(f, func() Config {
		c := baseConfig()
		c.Tags = map[string]string{"Name": "fuzz"}
		return c
	}())
	tok := e.token(f, "21600")
	allowed := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true}
	f.Fuzz(func(t *testing.T, method, path string, withToken bool) {
		if method == "" || strings.ContainsAny(method, " \t\r\n") || !strings.HasPrefix(path, "/") {
			return
		}
		r := httptest.NewRequest("GET", "http://169.254.169.254/", nil)
		r.Method = method
		r.URL = &url.URL{Path: path}
		r.RemoteAddr = "127.0.0.1:1"
		if withToken {
			r.Header.Set("X-aws-ec2-metadata-token", tok)
		}
		if method == "PUT" {
			r.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		}
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if !allowed[w.Code] {
			t.Fatalf("%s %q: status %d", method, path, w.Code)
		}
		if w.Header().Get("Server") != "EC2ws" {
			t.Fatalf("%s %q: no Server header", method, path)
		}
		if w.Code != 200 {
			return
		}
		if method == "PUT" {
			return // a token
		}
		if !withToken {
			t.Fatalf("%s %q: 200 without a token in required mode", method, path)
		}
		if strings.HasSuffix(w.Body.String(), "\n") {
			t.Fatalf("%s %q: body ends with LF", method, path)
		}
		p := strings.TrimLeft(cleanPath(path), "/")
		if p == "" {
			return
		}
		v, rest, _ := strings.Cut(p, "/")
		if !isVersion(v) {
			t.Fatalf("%s %q: 200 for unknown version", method, path)
		}
		if _, ok := e.srv.state.Load().tree[strings.TrimSuffix(rest, "/")]; !ok {
			t.Fatalf("%s %q: 200 for an entry not in the tree", method, path)
		}
		if method != http.MethodGet && method != http.MethodHead {
			t.Fatalf("%s %q: 200 for method %s", method, path, method)
		}
	})
}

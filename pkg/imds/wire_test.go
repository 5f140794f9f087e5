package imds

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// TestWireContentLength reads raw responses from the daemon's net/http
// server: every answer, small or large, GET or HEAD, success or error,
// carries an exact Content-Length and is never chunked, as EC2's are. The
// sizes straddle net/http's own 2048-byte buffer, above which it would
// chunk a body without a length.
func TestWireContentLength(t *testing.T) {
	for _, size := range []int{0, 1, 2047, 2048, 2049, 6144, 16 << 10} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			cfg := baseConfig()
			cfg.UserData = bytes.Repeat([]byte("u"), size)
			e := newEnv(t, cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hs := daemon.NewHTTPServer(e.srv, daemon.APILimits, daemon.HTTPOptions{})
			go hs.Serve(ln) //nolint:errcheck // ends with Close
			t.Cleanup(func() { hs.Close() })
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			br := bufio.NewReader(conn)
			// One keep-alive connection for every request, as SDKs use
			// one: a wrong length would desynchronise the next response.
			roundTrip := func(method, path string, hdr ...string) (*http.Response, string) {
				t.Helper()
				req := method + " " + path + " HTTP/1.1\r\nHost: 169.254.169.254\r\n"
				for _, h := range hdr {
					req += h + "\r\n"
				}
				if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("%s %s: reading body: %v", method, path, err)
				}
				return resp, string(body)
			}
			check := func(resp *http.Response, body string, wantLen int, what string) {
				t.Helper()
				if len(resp.TransferEncoding) > 0 {
					t.Errorf("%s: Transfer-Encoding %v, want none", what, resp.TransferEncoding)
				}
				if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(wantLen) {
					t.Errorf("%s: Content-Length %q, want %d", what, got, wantLen)
				}
				if resp.Request.Method != http.MethodHead && len(body) != wantLen {
					t.Errorf("%s: body has %d bytes, want %d", what, len(body), wantLen)
				}
				if got := resp.Header.Get("Server"); got != "EC2ws" {
					t.Errorf("%s: Server %q", what, got)
				}
			}
			resp, tok := roundTrip("PUT", "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 60")
			check(resp, tok, tokenLen, "token PUT")
			auth := "X-aws-ec2-metadata-token: " + tok
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := roundTrip(method, "/latest/user-data", auth)
				check(resp, body, size, method+" user-data")
				if method == "GET" && body != strings.Repeat("u", size) {
					t.Errorf("user-data body differs")
				}
				resp, body = roundTrip(method, "/latest/meta-data/iam/security-credentials/test-role", auth)
				want := len(e.do("GET", "/latest/meta-data/iam/security-credentials/test-role", map[string]string{"X-aws-ec2-metadata-token": tok}).Body.String())
				check(resp, body, want, method+" credentials")
				resp, body = roundTrip(method, "/latest/meta-data/nope", auth)
				check(resp, body, len(errorPage(http.StatusNotFound).body), fmt.Sprintf("%s 404", method))
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("status %d, want 404", resp.StatusCode)
				}
			}
		})
	}
}

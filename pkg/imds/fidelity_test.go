package imds

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EC2's answers where a differential comparison against published EC2
// captures found imds-shim differing, and the paths common tools poll.
// Every row names where the EC2 answer was recorded; the test sends the
// request as raw bytes over a real net/http.Server serving the handler
// directly (as the daemon does: no ServeMux, which would redirect cleaned
// paths), so header case, repeats and exact bodies are what a client sees.

// ec2NotFoundPage is EC2's 404 body as captured in coreos/coreos-overlay
// #142, hashicorp/terraform-provider-vault #327 and Netflix/ndbench #47
// (the system identifier indented by nine spaces), written out here
// rather than taken from the handler.
const ec2NotFoundPage = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>`

// ec2ExpectationFailedPage is the 417 body in s3fs-fuse #1605.
const ec2ExpectationFailedPage = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>417 - Expectation Failed</title>
 </head>
 <body>
  <h1>417 - Expectation Failed</h1>
 </body>
</html>`

const testPublicKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFidelityTestKeyNotARealKey0000000000000000 ops@build-07"

// ec2Answer is one recorded EC2 exchange.
type ec2Answer struct {
	name   string
	source string // where EC2's answer was published
	mode   TokenMode
	cfg    func(*Config)
	// request: method and path as sent on the wire, extra header lines
	// verbatim (any case, repeats), and whether a valid token is added.
	method, path string
	hdr          []string
	token        bool
	// EC2's answer: status, Content-Type, and the exact body; a
	// Content-Length equal to the body's length is checked on every row.
	status int
	ctype  string
	body   string
}

func ec2Answers() []ec2Answer {
	put := "X-aws-ec2-metadata-token-ttl-seconds: 21600"
	return []ec2Answer{
		// X-Forwarded-For: a proxy in the path (kube2iam, kiam, a sidecar).
		{name: "token PUT with X-Forwarded-For",
			source: "aws/aws-sdk-kotlin#627 (curl behind kube2iam: 403, content-type text/plain, content-length 0, server EC2ws); jtblin/kube2iam#241, #270",
			method: "PUT", path: "/latest/api/token", hdr: []string{put, "X-Forwarded-For: 10.1.45.173"},
			status: 403, ctype: "text/plain", body: ""},
		{name: "token PUT with x-forwarded-for in lower case",
			source: "aws/aws-sdk-kotlin#627 (header names are case-insensitive, RFC 9110 5.1)",
			method: "PUT", path: "/latest/api/token", hdr: []string{put, "x-forwarded-for: 10.1.45.173"},
			status: 403, ctype: "text/plain", body: ""},
		{name: "token PUT with X-Forwarded-For repeated and empty",
			source: "aws/aws-sdk-kotlin#627; EC2 User Guide: PUT requests that contain X-Forwarded-For are rejected",
			method: "PUT", path: "/latest/api/token", hdr: []string{put, "X-Forwarded-For: 10.1.45.173", "X-FORWARDED-FOR:"},
			status: 403, ctype: "text/plain", body: ""},
		{name: "GET with a token and X-Forwarded-For", mode: TokenOptional,
			source: "jtblin/kube2iam#279 (after #270 stripped it from PUTs, GETs carrying the token and X-Forwarded-For still got 403)",
			method: "GET", path: "/latest/meta-data/instance-id", hdr: []string{"X-Forwarded-For: 10.1.45.173"}, token: true,
			status: 403, ctype: "text/plain", body: ""},
		{name: "tokenless GET with X-Forwarded-For (IMDSv1 through a proxy)", mode: TokenOptional,
			source: "jtblin/kube2iam#241 (SDKs fall back to IMDSv1 and work); aws/aws-sdk-kotlin#627 (kube2iam log: GET iam/security-credentials/ 200 next to PUT 403)",
			method: "GET", path: "/latest/meta-data/iam/security-credentials/", hdr: []string{"X-Forwarded-For: 10.1.45.173"},
			status: 200, ctype: "text/plain", body: "test-role"},

		{name: "token PUT with a trailing slash",
			source: "aws-beam/aws_credentials#47 (curl -XPUT /latest/api/token/: 403, Content-Length 0, Content-Type text/plain)",
			method: "PUT", path: "/latest/api/token/", hdr: []string{put},
			status: 403, ctype: "text/plain", body: ""},

		{name: "404 page", mode: TokenOptional,
			source: "coreos/coreos-overlay#142, Netflix/ndbench#47 (body); 99designs/aws-vault#1208 (Content-Type text/html)",
			method: "GET", path: "/latest/meta10-data/local-hostname",
			status: 404, ctype: "text/html", body: ec2NotFoundPage},

		{name: "Host instance-data", mode: TokenOptional,
			source: "EC2's resolver answers instance-data with the endpoint (serverfault 436086: the metadata API is also reachable at http://instance-data/)",
			method: "GET", path: "/latest/meta-data/placement/region", hdr: []string{"Host: instance-data"},
			status: 200, ctype: "text/plain", body: "eu-west-1"},
		{name: "Host instance-data.ec2.internal", mode: TokenOptional,
			source: "us-east-1's internal domain is ec2.internal (aws/aws-node-termination-handler#229: ip-10-51-144-143.ec2.internal)",
			method: "GET", path: "/latest/meta-data/placement/region", hdr: []string{"Host: instance-data.ec2.internal."},
			status: 200, ctype: "text/plain", body: "eu-west-1"},
		{name: "Host instance-data.<region>.compute.internal", mode: TokenOptional,
			source: "other regions' internal domain is <region>.compute.internal (aws/aws-node-termination-handler#146: ip-10-34-5-239.us-west-2.compute.internal)",
			method: "GET", path: "/latest/meta-data/placement/region", hdr: []string{"Host: INSTANCE-DATA.eu-west-1.compute.internal:80"},
			status: 200, ctype: "text/plain", body: "eu-west-1"},
		{name: "Host instance-data of another region", mode: TokenOptional,
			source: "DNS-rebinding protection: only the names of this host's region resolve to its endpoint",
			method: "GET", path: "/latest/meta-data/placement/region", hdr: []string{"Host: instance-data.us-west-2.compute.internal"},
			status: 403, ctype: "text/plain", body: ""},
		{name: "Host a rebinding name", mode: TokenOptional,
			source: "99designs/aws-vault#578 (DNS rebinding against a local IMDS)",
			method: "GET", path: "/latest/meta-data/placement/region", hdr: []string{"Host: instance-data.attacker.example"},
			status: 403, ctype: "text/plain", body: ""},

		{name: "doubled slash after the version", mode: TokenOptional,
			source: "ex-aws/ex_aws#496 (EC2 serves /latest/meta-data//iam/security-credentials/; amazon-ec2-utils ec2-metadata sends /latest//meta-data/...)",
			method: "GET", path: "/latest//meta-data/iam/security-credentials/",
			status: 200, ctype: "text/plain", body: "test-role"},
		{name: "doubled slash inside meta-data", mode: TokenOptional,
			source: "ex-aws/ex_aws#496",
			method: "GET", path: "/latest/meta-data//placement//availability-zone",
			status: 200, ctype: "text/plain", body: "eu-west-1a"},
		{name: "doubled slash to an absent leaf", mode: TokenOptional,
			source: "amazon-ec2-utils ec2-metadata -r reads /latest//meta-data/ramdisk-id, 404 on HVM instances",
			method: "GET", path: "/latest//meta-data/ramdisk-id",
			status: 404, ctype: "text/html", body: ec2NotFoundPage},

		{name: "events/maintenance/scheduled", mode: TokenOptional,
			source: "aws/aws-node-termination-handler#146 (NTH errors on a 404 here); EC2 capture on Lightsail (zrthstr, AWS IMDSv1 enumeration, 2023): []",
			method: "GET", path: "/latest/meta-data/events/maintenance/scheduled",
			status: 200, ctype: "text/plain", body: "[]"},
		{name: "events/maintenance/history", mode: TokenOptional,
			source: "EC2 capture on Lightsail (zrthstr, 2023): []",
			method: "GET", path: "/latest/meta-data/events/maintenance/history",
			status: 200, ctype: "text/plain", body: "[]"},
		{name: "events/", mode: TokenOptional,
			source: "EC2 User Guide, instance metadata categories: events/maintenance/{history,scheduled}",
			method: "GET", path: "/latest/meta-data/events/",
			status: 200, ctype: "text/plain", body: "maintenance/"},
		{name: "events/maintenance/", mode: TokenOptional,
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/events/maintenance/",
			status: 200, ctype: "text/plain", body: "history\nscheduled"},

		{name: "public-keys/ lists index=name", mode: TokenOptional,
			cfg: func(c *Config) {
				c.PublicKeys = map[string]string{"ops": testPublicKey, "deploy": "ssh-rsa AAAAB3NzaC1yc2E= deploy"}
			},
			source: "EC2 User Guide, instance metadata categories (public-keys/0/openssh-key); cloud-init's EC2 datasource reads the 0=name listing",
			method: "GET", path: "/latest/meta-data/public-keys/",
			status: 200, ctype: "text/plain", body: "0=deploy\n1=ops"},
		{name: "public-keys/1/ lists openssh-key", mode: TokenOptional,
			cfg: func(c *Config) {
				c.PublicKeys = map[string]string{"ops": testPublicKey, "deploy": "ssh-rsa AAAAB3NzaC1yc2E= deploy"}
			},
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/public-keys/1/",
			status: 200, ctype: "text/plain", body: "openssh-key"},
		{name: "public-keys/1/openssh-key", mode: TokenOptional,
			cfg: func(c *Config) {
				c.PublicKeys = map[string]string{"ops": testPublicKey, "deploy": "ssh-rsa AAAAB3NzaC1yc2E= deploy"}
			},
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/public-keys/1/openssh-key",
			status: 200, ctype: "text/plain", body: testPublicKey},
		{name: "public-keys/ without keys", mode: TokenOptional,
			source: "an instance launched without a key pair has no public-keys/ (404)",
			method: "GET", path: "/latest/meta-data/public-keys/",
			status: 404, ctype: "text/html", body: ec2NotFoundPage},

		{name: "reservation-id", mode: TokenOptional,
			source: "EC2 User Guide, instance metadata categories (r- + 17 hex)",
			method: "GET", path: "/latest/meta-data/reservation-id",
			status: 200, ctype: "text/plain", body: defaultReservationID(testHost)},
		{name: "reservation-id configured", mode: TokenOptional,
			cfg:    func(c *Config) { c.ReservationID = "r-0123456789abcdef0" },
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/reservation-id",
			status: 200, ctype: "text/plain", body: "r-0123456789abcdef0"},
		{name: "security-groups", mode: TokenOptional,
			cfg:    func(c *Config) { c.SecurityGroups = []string{"default", "build-hosts"} },
			source: "EC2 User Guide, instance metadata categories (names, one per line)",
			method: "GET", path: "/latest/meta-data/security-groups",
			status: 200, ctype: "text/plain", body: "default\nbuild-hosts"},
		{name: "security-groups unset", mode: TokenOptional,
			source: "no honest on-prem value: 404",
			method: "GET", path: "/latest/meta-data/security-groups",
			status: 404, ctype: "text/html", body: ec2NotFoundPage},
		{name: "block-device-mapping/", mode: TokenOptional,
			source: "EC2 capture on Lightsail (zrthstr, 2023): block-device-mapping/ami and /root",
			method: "GET", path: "/latest/meta-data/block-device-mapping/",
			status: 200, ctype: "text/plain", body: "ami\nroot"},
		{name: "block-device-mapping/root", mode: TokenOptional,
			source: "EC2 capture on Lightsail (zrthstr, 2023): /dev/xvda",
			method: "GET", path: "/latest/meta-data/block-device-mapping/root",
			status: 200, ctype: "text/plain", body: "/dev/xvda"},
		{name: "block-device-mapping/ami configured", mode: TokenOptional,
			cfg:    func(c *Config) { c.RootDeviceName = "/dev/sda1" },
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/block-device-mapping/ami",
			status: 200, ctype: "text/plain", body: "/dev/sda1"},
		{name: "block-device-mapping/root configured", mode: TokenOptional,
			cfg:    func(c *Config) { c.RootDeviceName = "/dev/nvme0n1" },
			source: "EC2 User Guide, instance metadata categories",
			method: "GET", path: "/latest/meta-data/block-device-mapping/root",
			status: 200, ctype: "text/plain", body: "/dev/nvme0n1"},

		{name: "/latest/ lists user-data without any", mode: TokenOptional,
			source: "coreos/afterburn#418 (EC2: /2009-04-04 lists dynamic, meta-data, user-data while /2009-04-04/user-data is 404); AEMM latest listing",
			method: "GET", path: "/latest/",
			status: 200, ctype: "text/plain", body: "dynamic\nmeta-data\nuser-data"},
		{name: "user-data set", mode: TokenOptional,
			cfg:    func(c *Config) { c.UserData = []byte("#!/bin/bash\necho hello\n") },
			source: "EC2 capture of curl -v /latest/user-data, curl 7.88.1, May 2023 (Content-Type: application/octet-stream, bytes as given)",
			method: "GET", path: "/latest/user-data",
			status: 200, ctype: "application/octet-stream", body: "#!/bin/bash\necho hello\n"},
		{name: "user-data without any", mode: TokenOptional,
			source: "coreos/afterburn#418, coreos/coreos-overlay#142 (the 404 page where user data was expected)",
			method: "GET", path: "/2009-04-04/user-data",
			status: 404, ctype: "text/html", body: ec2NotFoundPage},

		{name: "token PUT with Expect: 100-continue and no body",
			source: "s3fs-fuse/s3fs-fuse#1765 (curl adds Expect to the token PUT; EC2 answers 417), #1605 (the 417 body)",
			method: "PUT", path: "/latest/api/token", hdr: []string{put, "Expect: 100-continue"},
			status: 417, ctype: "text/plain", body: ec2ExpectationFailedPage},
	}
}

func TestEC2Answers(t *testing.T) {
	for _, a := range ec2Answers() {
		t.Run(a.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.TokenMode = a.mode
			cfg.Region = "eu-west-1"
			if a.cfg != nil {
				a.cfg(&cfg)
			}
			e := newEnv(t, cfg)
			ts := httptest.NewServer(e.srv)
			t.Cleanup(ts.Close)
			hdr := a.hdr
			if a.token {
				resp, tok := rawRoundTrip(t, ts, "PUT", "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds: 60")
				if resp.StatusCode != 200 {
					t.Fatalf("token PUT: %d", resp.StatusCode)
				}
				hdr = append([]string{"X-aws-ec2-metadata-token: " + tok}, hdr...)
			}
			resp, body := rawRoundTrip(t, ts, a.method, a.path, hdr...)
			t.Logf("EC2 answer recorded in: %s", a.source)
			if resp.StatusCode != a.status {
				t.Fatalf("status %d, EC2 answers %d (body %q)", resp.StatusCode, a.status, body)
			}
			if got := resp.Header.Get("Content-Type"); got != a.ctype {
				t.Errorf("Content-Type %q, EC2 sends %q", got, a.ctype)
			}
			if got := resp.Header.Get("Content-Length"); got != strconv.Itoa(len(a.body)) {
				t.Errorf("Content-Length %q, want %d", got, len(a.body))
			}
			if got := resp.Header.Get("Server"); got != "EC2ws" {
				t.Errorf("Server %q, EC2 sends EC2ws", got)
			}
			if body != a.body {
				t.Errorf("body %q, EC2's is %q", body, a.body)
			}
		})
	}
}

// rawRoundTrip sends one request as raw bytes on a new connection (Host
// 169.254.169.254 unless a header line sets one) and reads the answer.
func rawRoundTrip(t *testing.T, ts *httptest.Server, method, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	host := "Host: 169.254.169.254\r\n"
	var lines strings.Builder
	for _, h := range hdr {
		if strings.HasPrefix(strings.ToLower(h), "host:") {
			host = ""
		}
		lines.WriteString(h + "\r\n")
	}
	req := method + " " + path + " HTTP/1.1\r\n" + host + lines.String() + "Connection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, string(b)
}

// A client that sends Expect: 100-continue waits for the interim 100 (or a
// final answer) before it sends the body. The handler answers 417 before
// reading anything, so neither side waits: the final answer comes first,
// with no 100 Continue before it, whether the request announces a body by
// length, chunked (curl's token PUT in s3fs-fuse#1765) or none at all.
func TestExpectContinueAnsweredWithoutBody(t *testing.T) {
	e := newEnv(t, baseConfig())
	ts := httptest.NewServer(e.srv)
	t.Cleanup(ts.Close)
	for _, framing := range []string{"Content-Length: 16\r\n", "Transfer-Encoding: chunked\r\n", ""} {
		t.Run(strings.TrimSpace(framing), func(t *testing.T) {
			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req := "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n" +
				"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nExpect: 100-continue\r\n" + framing + "\r\n"
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			// The deadline only turns a hang into a failure; the answer
			// is expected at once.
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			status, err := br.ReadString('\n')
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("no answer without the body: the server waits for it")
				}
				t.Fatal(err)
			}
			if status != "HTTP/1.1 417 Expectation Failed\r\n" {
				t.Fatalf("first line %q, want the final 417 (no 100 Continue)", status)
			}
		})
	}
}

// The default reservation ID is EC2-shaped, stable for a machine, and
// shares no digits with the instance ID derived from the same machine ID.
func TestDefaultReservationID(t *testing.T) {
	r := defaultReservationID(testHost)
	if !regexp.MustCompile(`^r-[0-9a-f]{17}$`).MatchString(r) || len(r) != 19 {
		t.Errorf("reservation ID %q is not r- + 17 hex", r)
	}
	if r != defaultReservationID(testHost) {
		t.Error("reservation ID differs between calls")
	}
	if r[2:] == defaultInstanceID(testHost)[2:] {
		t.Error("reservation ID repeats the instance ID's digits")
	}
	other := testHost
	other.MachineID = "ffffffffffffffffffffffffffffffff"
	if defaultReservationID(other) == r {
		t.Error("two machines share a reservation ID")
	}
}

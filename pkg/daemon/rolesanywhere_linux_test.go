// The real binary with the roles_anywhere source, as root, in a private
// network namespace: the verifying Roles Anywhere fake (in this process,
// reachable from the daemon because both share the namespace) and moto's
// STS, and unmodified clients reaching 169.254.169.254.

package daemon_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/internal/rafake"
)

const (
	raTA      = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	raProfile = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"
	raBoot    = "arn:aws:iam::123456789012:role/host-bootstrap"
	raApp     = "arn:aws:iam::123456789012:role/app"
)

// raEnv is env plus a PKI (root CA → intermediate → host leaf) and the fake
// Roles Anywhere, which trusts the root and lets the profile assume
// host-bootstrap only.
type raEnv struct {
	*env
	ca, inter *rafake.Issued
	fake      *rafake.Server
	url       string
	cert, key string
	cfg       string
	keys      [][]byte // every key written, to prove none is ever printed
}

func newRAEnv(t *testing.T) *raEnv {
	e := &raEnv{env: newEnv(t)}
	var err error
	if e.ca, err = rafake.NewCA("Fleet Root CA", rafake.P256); err != nil {
		t.Fatal(err)
	}
	if e.inter, err = e.ca.Issue(rafake.CertOptions{CommonName: "Fleet Issuing CA", IsCA: true}); err != nil {
		t.Fatal(err)
	}
	e.fake, e.url = rafake.Start(t, rafake.Config{
		TrustAnchorARN: raTA, TrustAnchor: e.ca.Cert, ProfileARN: raProfile,
		RoleARNs: []string{raBoot}, Logf: t.Logf,
	})
	e.cert, e.key = filepath.Join(e.dir, "host.pem"), filepath.Join(e.dir, "host.key")
	e.cfg = filepath.Join(e.dir, "imds-shim.yaml")
	return e
}

// issue writes a new leaf, then the intermediate, and the key (0600), by
// rename as certbot or step do.
func (e *raEnv) issue(o rafake.CertOptions, format rafake.KeyFormat) *rafake.Issued {
	e.t.Helper()
	o.CommonName = "host-a.fleet.example"
	leaf, err := e.inter.Issue(o)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := rafake.WriteFiles(leaf, []*x509.Certificate{e.inter.Cert}, format, e.cert, e.key); err != nil {
		e.t.Fatal(err)
	}
	k, err := os.ReadFile(e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.keys = append(e.keys, k)
	return leaf
}

// writeRAConfig serves role (roles_anywhere.role_arn itself, or another
// role chained from its session) with the certificate as the only source.
func (e *raEnv) writeRAConfig(role string) {
	e.t.Helper()
	body := fmt.Sprintf(`role_arn: %s
sts_endpoint: %s
duration: 1h
start_timeout: 20s
imds:
  listen: 169.254.169.254:254
roles_anywhere:
  certificate: %s
  private_key: %s
  trust_anchor_arn: %s
  profile_arn: %s
  role_arn: %s
  endpoint: %s
`, role, e.moto.URL, e.cert, e.key, raTA, raProfile, raBoot, e.url)
	if err := os.WriteFile(e.cfg, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// served is what one client resolved: the access key it signs with and,
// for a role moto issued, the caller identity moto reports for it.
type served struct {
	client, accessKeyID, arn string
}

// pyEnv is an environment with no AWS configuration at all: credentials can
// only come from 169.254.169.254, which the daemon's redirect answers.
func (e *raEnv) pyEnv() []string {
	home := filepath.Join(e.dir, "home")
	os.MkdirAll(home, 0o700)
	env := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_PAGER="}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PYENV_") {
			env = append(env, kv)
		}
	}
	if os.Getenv("PYENV_ROOT") == "" {
		if p, err := exec.LookPath("python3"); err == nil && strings.Contains(p, "/.pyenv/shims/") {
			env = append(env, "PYENV_ROOT="+filepath.Dir(filepath.Dir(p)))
		}
	}
	return env
}

func (e *raEnv) run(name string, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = e.pyEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("%s %q: %v\n%s", name, args, err, stderr.String())
	}
	return string(out)
}

// need returns the client's path, or skips (fails under CI).
func need(t *testing.T, what, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not available: %v", what, err)
	}
	t.Skipf("%s not available: %v", what, err)
	return ""
}

const botoScript = `
import boto3, json, sys
s = boto3.Session(region_name="eu-west-1")
c = s.get_credentials()
f = c.get_frozen_credentials()
out = {"method": c.method, "access_key": f.access_key, "arn": ""}
if sys.argv[2] == "moto":
    out["arn"] = s.client("sts", endpoint_url=sys.argv[1]).get_caller_identity()["Arn"]
print(json.dumps(out))
`

// clients asks boto3, the AWS CLI v1 and aws-sdk-go-v2, each with no
// configuration, which credentials 169.254.169.254 gives them; with
// viaMoto the credentials are moto's and its GetCallerIdentity names the
// role they belong to.
func (e *raEnv) clients(viaMoto bool) []served {
	e.t.Helper()
	t := e.t
	var out []served
	moto := map[bool]string{true: "moto", false: "-"}[viaMoto]

	py := need(t, "python3 with boto3", "python3")
	var b struct{ Method, Access_key, Arn string }
	if err := json.Unmarshal([]byte(e.run(py, "-c", botoScript, e.moto.URL, moto)), &b); err != nil {
		t.Fatal(err)
	}
	if b.Method != "iam-role" {
		t.Errorf("boto3 credential method %q, want iam-role", b.Method)
	}
	out = append(out, served{"boto3", b.Access_key, b.Arn})

	cliV1 := need(t, "AWS CLI v1 (pip)", "aws")
	if r, _ := filepath.EvalSymlinks(cliV1); r == "/usr/bin/aws" {
		if os.Getenv("CI") != "" {
			t.Fatal("aws on PATH is Debian's CLI v2, not the pip AWS CLI v1")
		}
		t.Skip("aws on PATH is Debian's CLI v2, not the pip AWS CLI v1")
	}
	// CLI v1 shows the last four characters of the key and where it came
	// from; the rest of the key must be the one boto3 saw.
	var cli served
	cli.client = "aws-cli-v1"
	for _, line := range strings.Split(e.run(cliV1, "configure", "list"), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "access_key" {
			if f[2] != "iam-role" {
				t.Errorf("aws configure list: %q, want iam-role", line)
			}
			cli.accessKeyID = strings.TrimLeft(f[1], "*")
		}
	}
	if viaMoto {
		cli.arn = strings.TrimSpace(e.run(cliV1, "sts", "get-caller-identity", "--endpoint-url", e.moto.URL,
			"--region", "eu-west-1", "--output", "text", "--query", "Arn"))
	}
	out = append(out, cli)

	// aws-sdk-go-v2's default chain, in this process, with AWS_* cleared.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("eu-west-1"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatalf("aws-sdk-go-v2 default chain: %v", err)
	}
	g := served{"aws-sdk-go-v2", c.AccessKeyID, ""}
	if viaMoto {
		id, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(e.moto.URL) }).
			GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatalf("aws-sdk-go-v2 GetCallerIdentity: %v", err)
		}
		g.arn = aws.ToString(id.Arn)
	}
	return append(out, g)
}

// checkServed compares what every client resolved with the served document.
func checkServed(t *testing.T, got []served, accessKeyID, arnPrefix string) {
	t.Helper()
	if len(got) != 3 {
		t.Errorf("%d clients ran, want boto3, the AWS CLI v1 and aws-sdk-go-v2", len(got))
	}
	for _, s := range got {
		t.Logf("%s: access key %s, identity %q", s.client, s.accessKeyID, s.arn)
		key := accessKeyID
		if s.client == "aws-cli-v1" {
			key = accessKeyID[len(accessKeyID)-4:]
		}
		if s.accessKeyID != key || !strings.HasPrefix(s.arn, arnPrefix) {
			t.Errorf("%s resolved key %q, identity %q; want %q, %q…", s.client, s.accessKeyID, s.arn, key, arnPrefix)
		}
	}
}

// credentialDoc is the served credentials document of role.
type credentialDoc struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }

func servedDoc(t *testing.T, role string) credentialDoc {
	t.Helper()
	code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"+role)
	var doc credentialDoc
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || doc.Code != "Success" ||
		doc.AccessKeyId == "" || doc.SecretAccessKey == "" || doc.Token == "" || doc.Expiration == "" {
		t.Fatalf("credentials of %s = %d %q (%v)", role, code, body, err)
	}
	return doc
}

var certExpiryRE = regexp.MustCompile(`(?m)^imds_shim_certificate_expiry_seconds (\S+)$`)

// certExpiry scrapes imds_shim_certificate_expiry_seconds.
func certExpiry(t *testing.T) float64 {
	t.Helper()
	_, body := httpGet(t, "http://127.0.0.1:9254/metrics")
	m := certExpiryRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no imds_shim_certificate_expiry_seconds:\n%.3000s", body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func near(got float64, want time.Time) bool {
	d := time.Until(want).Seconds() - got
	return d > -2 && d < 30
}

// reload sends SIGHUP and waits until the daemon is ready again.
func (e *raEnv) reload(d *daemonProc) {
	e.t.Helper()
	d.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNote("RELOADING=1", d)
	e.waitNote("READY=1", d)
}

// TestServeRolesAnywhere: certificate in, EC2 experience out. The
// directly served role's credentials are CreateSession's; a chained role is
// assumed in moto with the Roles Anywhere session; a certificate renewed on
// disk is what the next CreateSession signs with, with no restart; an
// expired one fails that CreateSession locally without disturbing what is
// served.
//
// The binary's refreshes are scheduled by the wall clock (half an hour and
// more for these sessions), so this test triggers the next CreateSession
// with a reload that changes the served role and leaves roles_anywhere as
// it was: the shared source is kept, and only its re-reading of the files
// can bring in the new certificate. The refresh loop itself meeting a
// renewed or expired certificate is tested on a fake clock in
// pkg/credentials (TestRotation, TestExpiredCertificateKeepsLastGood).
func TestServeRolesAnywhere(t *testing.T) {
	e := newRAEnv(t)
	before := netState(t)
	first := e.issue(rafake.CertOptions{KeyType: rafake.P256, NotAfter: time.Now().Add(20 * 24 * time.Hour)}, rafake.SEC1)
	e.writeRAConfig(raBoot)

	// check sees the certificate the daemon will use.
	out, err := exec.Command(binary(t), "check", "-c", e.cfg, "--no-sts").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serial   "+first.Cert.SerialNumber.String()) ||
		!strings.Contains(string(out), "role_arn "+raBoot+": directly from CreateSession") {
		t.Errorf("check: %v\n%s", err, out)
	}

	// 1. roles_anywhere.role_arn itself, served from CreateSession.
	d := e.serve(e.cfg)
	if m := e.waitNote("READY=1", d); !strings.Contains(m, "serving host-bootstrap") {
		t.Errorf("READY message %q", m)
	}
	ss := e.fake.Sessions()
	if len(ss) != 1 || ss[0].Serial != first.Cert.SerialNumber.String() || ss[0].RoleARN != raBoot || ss[0].Duration != time.Hour {
		t.Fatalf("CreateSession calls %+v; want one 1h session for %s signed by serial %s", ss, raBoot, first.Cert.SerialNumber)
	}
	direct := servedDoc(t, "host-bootstrap")
	if direct.AccessKeyId != ss[0].AccessKeyID {
		t.Errorf("served key %s, CreateSession issued %s", direct.AccessKeyId, ss[0].AccessKeyID)
	}
	checkServed(t, e.clients(false), ss[0].AccessKeyID, "")
	if v := certExpiry(t); !near(v, first.Cert.NotAfter) {
		t.Errorf("imds_shim_certificate_expiry_seconds %v, want about %v", v, time.Until(first.Cert.NotAfter).Seconds())
	}

	// 2. Renewal in place (another key type and encoding, as a re-keying
	// CA would issue): nothing is signalled; the gauge follows at once.
	second := e.issue(rafake.CertOptions{KeyType: rafake.RSA2048, NotAfter: time.Now().Add(90 * 24 * time.Hour)}, rafake.PKCS1)
	if v := certExpiry(t); !near(v, second.Cert.NotAfter) {
		t.Errorf("after renewal imds_shim_certificate_expiry_seconds %v, want about %v", v, time.Until(second.Cert.NotAfter).Seconds())
	}

	// 3. A chained role, assumed in moto with the Roles Anywhere session:
	// that session's CreateSession is signed with the renewed certificate.
	e.writeRAConfig(raApp)
	e.reload(d)
	if code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "app" {
		t.Fatalf("after reload, role listing = %d %q\n%s", code, body, d.stderr)
	}
	ss = e.fake.Sessions()
	if len(ss) != 2 || ss[1].Serial != second.Cert.SerialNumber.String() || ss[1].RoleARN != raBoot {
		t.Fatalf("CreateSession calls %+v; want a second one signed by the renewed serial %s", ss, second.Cert.SerialNumber)
	}
	chained := servedDoc(t, "app")
	if chained.AccessKeyId == ss[1].AccessKeyID || !strings.HasPrefix(chained.AccessKeyId, "ASIA") {
		t.Errorf("chained role served %s, want moto's key, not the source session's %s", chained.AccessKeyId, ss[1].AccessKeyID)
	}
	checkServed(t, e.clients(true), chained.AccessKeyId, "arn:aws:sts::123456789012:assumed-role/app/")

	// 4. An expired certificate at the next CreateSession: a reload back to
	// the direct role must create a session, which fails before anything is
	// sent; the reload is rejected, the daemon keeps running and serves the
	// chained role's set as before — never an empty document.
	expired := e.issue(rafake.CertOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Minute)}, rafake.PKCS8)
	e.writeRAConfig(raBoot)
	e.reload(d)
	if got := servedDoc(t, "app"); got != chained {
		t.Errorf("after a failed CreateSession the served set changed:\n%s", cmp.Diff(chained, got))
	}
	if n := len(e.fake.Sessions()); n != 2 || len(e.fake.Rejections()) != 0 {
		t.Errorf("an expired certificate reached the service: %d sessions, rejections %+v", n, e.fake.Rejections())
	}
	if !strings.Contains(d.stderr.String(), "reload rejected") || !strings.Contains(d.stderr.String(), "class=certificate") ||
		!strings.Contains(d.stderr.String(), "serial "+expired.Cert.SerialNumber.String()+") expired at") {
		t.Errorf("no log of the rejected reload and its cause:\n%s", d.stderr)
	}
	if v := certExpiry(t); v >= 0 {
		t.Errorf("imds_shim_certificate_expiry_seconds %v for an expired certificate, want negative", v)
	}
	st, err := exec.Command(binary(t), "status", "--socket", filepath.Join(e.dir, "run", "control.sock")).CombinedOutput()
	if err != nil || !strings.Contains(string(st), "last reload: REJECTED") || !strings.Contains(string(st), ") expired at") ||
		!strings.Contains(string(st), "role:        "+raApp) {
		t.Errorf("status: %v\n%s", err, st)
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	e.waitNote("STOPPING=1", d)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, d.stderr)
	}
	if diff := before.Diff(netState(t)); diff != "" {
		t.Errorf("namespace changed by a serve/stop cycle (-before +after):\n%s", diff)
	}
	// Neither the key nor a served secret reaches the logs or status.
	logs := d.stderr.String() + string(st) + string(out)
	for i, key := range e.keys {
		for _, l := range strings.Split(string(key), "\n") {
			if len(l) > 16 && !strings.HasPrefix(l, "-----") && strings.Contains(logs, l) {
				t.Errorf("a line of private key #%d appears in the logs or status", i+1)
				break
			}
		}
	}
	for _, s := range []string{direct.SecretAccessKey, direct.Token, chained.SecretAccessKey, chained.Token} {
		if strings.Contains(logs, s) {
			t.Errorf("a served secret appears in the logs or status")
		}
	}
}

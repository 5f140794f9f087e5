// Per-caller roles with the real binary, as root, in a private network
// namespace against moto: unmodified clients run as root, as nobody and
// from a test cgroup get the role their entry gives through
// 169.254.169.254, a caller matching nothing gets none, a token does not
// travel between callers, and a caller the kernel cannot vouch for (its
// socket already closed) is never taken for root.

package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/sys/unix"

	"github.com/imds-shim/imds-shim/pkg/callers"
)

// TestRolesGoSDKClient is not a test of its own: TestRoles runs the test
// binary again with IMDS_SHIM_ROLES_GOSDK set, as another user or in
// another cgroup, to run aws-sdk-go-v2 as an unmodified client would.
func TestRolesGoSDKClient(t *testing.T) {
	endpoint := os.Getenv("IMDS_SHIM_ROLES_GOSDK")
	if endpoint == "" {
		t.Skip("run by TestRoles")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = &endpoint }).GetCallerIdentity(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ARN=%s\n", *out.Arn)
}

// caller is how a client process is started: as which user, in which
// cgroup.
type caller struct {
	name string
	attr func() *syscall.SysProcAttr
}

// asUser runs as uid with no supplementary groups. CAP_DAC_READ_SEARCH
// (ambient) only lets the client reach the pyenv install and the test
// binary under root's 0700 directories; the kernel reports the socket's
// uid all the same.
func asUser(uid, gid uint32) func() *syscall.SysProcAttr {
	return func() *syscall.SysProcAttr {
		return &syscall.SysProcAttr{
			Credential:  &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}},
			AmbientCaps: []uintptr{unix.CAP_DAC_READ_SEARCH},
		}
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	layout := callers.DetectLayout()
	if !layout.Units() {
		t.Skip("no cgroup2 hierarchy: units cannot be told apart here")
	}
	tag := fmt.Sprintf("imds-shim-p1test-%08x", rand.Uint32())
	role := func(n string) string { return "arn:aws:iam::123456789012:role/" + n }
	cfg := filepath.Join(e.dir, "imds-shim.yaml")
	body := fmt.Sprintf(`sts_endpoint: %s
credentials_file: %s
duration: 15m
start_timeout: 20s
imds:
  listen: 169.254.169.254:254
  tokens: optional
metrics:
  listen: 127.0.0.1:9254
roles:
  - role_arn: %s
    units: [%s.slice]
  - role_arn: %s
    users: [root]
  - role_arn: %s
    users: [nobody]
    caller_source_identity: true
    max_caller_sessions: 4
`, e.moto.URL, filepath.Join(e.dir, "credentials"), role("cgtest"), tag, role("rootrole"), role("nobodyrole"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	netBefore := netState(t)
	d := e.serve(cfg)
	// However it ends, stop the daemon so that it removes what it
	// installed in this namespace, which later tests share.
	defer func() {
		d.cmd.Process.Signal(syscall.SIGCONT)
		d.cmd.Process.Signal(syscall.SIGTERM)
		if code := d.wait(t); code != 0 {
			t.Errorf("exit code %d after SIGTERM", code)
		}
		if diff := netBefore.Diff(netState(t)); diff != "" {
			t.Errorf("namespace changed by a serve/stop cycle (-before +after):\n%s", diff)
		}
	}()
	ready := e.waitNote("READY=1", d)
	if !strings.Contains(ready, "STATUS=serving cgtest, rootrole, nobodyrole") {
		t.Errorf("READY message %q", ready)
	}

	// A cgroup of the unified hierarchy, as systemd would make for a
	// unit: its processes run as root but match the slice entry first.
	fd := makeUnitCgroup(t, layout.Root, tag+".slice/"+tag+"-client.service")
	inCgroup := func() *syscall.SysProcAttr { return &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd} }
	home := t.TempDir()
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    caller
		want string
	}{
		{caller{"root", func() *syscall.SysProcAttr { return nil }}, "rootrole"},
		{caller{"nobody", asUser(65534, 65534)}, "nobodyrole"},
		{caller{tag + "-client.service", inCgroup}, "cgtest"},
	} {
		for _, client := range []string{"aws-cli-v1", "boto3", "aws-sdk-go-v2"} {
			arn := runRolesClient(t, e, tc.c, client, home)
			if !strings.HasPrefix(arn, "arn:aws:sts::123456789012:assumed-role/"+tc.want+"/") {
				t.Errorf("%s as %s: get-caller-identity = %q, want assumed-role/%s", client, tc.c.name, arn, tc.want)
			}
		}
	}

	// A caller matching no entry (uid 1234, no passwd entry; there is no
	// top-level role): 404 on the listing, as EC2 without a profile.
	stranger := asUser(1234, 1234)
	tok := curlAs(t, stranger, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token")
	if got := curlAs(t, stranger, "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-aws-ec2-metadata-token: "+tok,
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/"); got != "404" {
		t.Errorf("listing for a caller matching nothing = %s, want 404", got)
	}

	// A token minted as root is refused to nobody.
	rootTok := imdsToken(t)
	if code, _ := imdsGetWith(t, rootTok, "/latest/meta-data/instance-id"); code != 200 {
		t.Fatalf("root's own token: %d", code)
	}
	if got := curlAs(t, asUser(65534, 65534), "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-aws-ec2-metadata-token: "+rootTok,
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/"); got != "401" {
		t.Errorf("root's token replayed by nobody = %s, want 401", got)
	}

	// A caller that has closed before the daemon looks at it: the kernel
	// answers with a stub carrying uid 0. The daemon is stopped while root
	// connects, sends its request and closes, so that it can only look
	// afterwards; the request must get no role (404), never root's (200).
	before := requestCount(t, "credentials", "404")
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", "169.254.169.254:80")
	if err == nil {
		_, err = conn.Write([]byte("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"))
		conn.Close()
	}
	if cerr := d.cmd.Process.Signal(syscall.SIGCONT); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for requestCount(t, "credentials", "404") == before {
		if time.Now().After(deadline) {
			t.Fatalf("the closed caller's request was not answered 404 within 10s; 200s: %v", requestCount(t, "credentials", "200"))
		}
		time.Sleep(20 * time.Millisecond) // polling the daemon's own counter
	}

	// The audit names each caller once per credential set, never a secret.
	log := d.stderr.String()
	for _, want := range []string{
		`msg=caller uid=65534 unit="" role=` + role("nobodyrole") + " access_key_id=",
		`msg=caller uid=0 unit=` + tag + `-client.service role=` + role("cgtest") + " access_key_id=",
		`msg=caller uid=0 unit="" role=` + role("rootrole") + " access_key_id=",
	} {
		if n := strings.Count(log, want); n != 1 {
			t.Errorf("audit line %q appears %d times, want once (3 clients each)", want, n)
		}
	}
	if strings.Contains(log, "SecretAccessKey") || regexp.MustCompile(`secret_access_key=\S`).MatchString(log) {
		t.Error("a secret in the daemon's log")
	}

	// status: each role, and how many callers it served.
	out, err := exec.Command(binary(t), "status", "--socket", filepath.Join(e.dir, "run", "control.sock")).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"role cgtest (roles[0]): 1 callers served", "role rootrole (roles[1]): 1 callers served",
		"role nobodyrole (roles[2]): 1 callers served", "sessions:  1 of at most 4", "caller nobody: ok"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if code, body := httpGet(t, "http://127.0.0.1:9254/metrics"); code != 200 ||
		!strings.Contains(body, `imds_shim_credentials_expiry_seconds{role="nobodyrole"}`) ||
		!strings.Contains(body, `imds_shim_refresh_attempts_total{role="rootrole"} 1`) {
		t.Errorf("metrics lack the per-role series:\n%s", body)
	}

	// Reload with an entry for uid 1234 added: it gets its role; the
	// unchanged roles keep their refreshers (no new STS call) and the
	// per-caller role its session.
	body += "  - role_arn: " + role("stranger") + "\n    users: [\"1234\"]\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNote("RELOADING=1", d)
	if note := e.waitNote("READY=1", d); !strings.Contains(note, "stranger") {
		t.Fatalf("after reload: %q\n%s", note, d.stderr)
	}
	tok = curlAs(t, stranger, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token")
	if got := curlAs(t, stranger, "-H", "X-aws-ec2-metadata-token: "+tok,
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/"); got != "stranger" {
		t.Errorf("listing for uid 1234 after the reload = %q, want stranger", got)
	}
	_, metrics := httpGet(t, "http://127.0.0.1:9254/metrics")
	for _, want := range []string{`imds_shim_refresh_attempts_total{role="rootrole"} 1`, `imds_shim_refresh_attempts_total{role="cgtest"} 1`,
		`imds_shim_refresh_attempts_total{role="nobodyrole"} 1`, `imds_shim_refresh_attempts_total{role="stranger"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("after the reload, metrics lack %q (kept refreshers make no new call)", want)
		}
	}
	out, _ = exec.Command(binary(t), "status", "--socket", filepath.Join(e.dir, "run", "control.sock")).CombinedOutput()
	if !strings.Contains(string(out), "sessions:  1 of at most 4") {
		t.Errorf("the per-caller session did not survive the reload:\n%s", out)
	}

	// A connection kept open across a reload that gives its caller
	// another role sees the new role: the role a connection got is kept
	// only for as long as the roles stay the same.
	kept, err := net.Dial("tcp", "169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	br := bufio.NewReader(kept)
	listing := func() string {
		t.Helper()
		if _, err := io.WriteString(kept, "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	if got := listing(); got != "rootrole" {
		t.Fatalf("root's listing on the kept connection = %q, want rootrole", got)
	}
	body = strings.Replace(body, "roles:\n", "roles:\n  - role_arn: "+role("rootnew")+"\n    users: [root]\n", 1)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNote("RELOADING=1", d)
	e.waitNote("READY=1", d)
	if got := listing(); got != "rootnew" {
		t.Errorf("root's listing on the same connection after the reload = %q, want rootnew", got)
	}
}

// makeUnitCgroup creates dir in the cgroup2 hierarchy and returns an fd for
// CLONE_INTO_CGROUP; the cgroups are removed when the test ends.
func makeUnitCgroup(t *testing.T, root, dir string) int {
	t.Helper()
	full := filepath.Join(root, dir)
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for d := full; d != root && d != "/"; d = filepath.Dir(d) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("removing test cgroup: %v", err)
			}
		}
	})
	fd, err := unix.Open(full, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// runRolesClient runs one unmodified client as c, with no AWS
// configuration, and returns the ARN sts get-caller-identity reports.
func runRolesClient(t *testing.T, e *env, c caller, client, home string) string {
	t.Helper()
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
	var name string
	var args []string
	switch client {
	case "aws-cli-v1":
		p, err := exec.LookPath("aws")
		if err != nil {
			t.Skip("no AWS CLI v1 on PATH")
		}
		name, args = p, []string{"sts", "get-caller-identity", "--endpoint-url", e.moto.URL, "--region", "us-east-1", "--output", "text", "--query", "Arn"}
	case "boto3":
		p, err := exec.LookPath("python3")
		if err != nil {
			t.Skip("no python3")
		}
		name, args = p, []string{"-c", "import boto3,sys; print(boto3.client('sts', region_name='us-east-1', endpoint_url=sys.argv[1]).get_caller_identity()['Arn'])", e.moto.URL}
	case "aws-sdk-go-v2":
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		name, args = self, []string{"-test.run=^TestRolesGoSDKClient$", "-test.v"}
		// Stay in this namespace: nstest.Main would otherwise move a
		// root child into a new one.
		env = append(env, "IMDS_SHIM_ROLES_GOSDK="+e.moto.URL, "IMDS_SHIM_TEST_HOST_NETNS="+os.Getenv("IMDS_SHIM_TEST_HOST_NETNS"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Through env(1): execve looks the client up before the ambient
	// capability is effective, which it is in env, which then finds the
	// client under root's directories.
	cmd := exec.CommandContext(ctx, "/usr/bin/env", append([]string{name}, args...)...)
	cmd.Env = env
	cmd.SysProcAttr = c.attr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s as %s: %v\n%s", client, c.name, err, out)
	}
	s := strings.TrimSpace(string(out))
	if client == "aws-sdk-go-v2" {
		sc := bufio.NewScanner(strings.NewReader(s))
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ARN="); ok {
				return a
			}
		}
		t.Fatalf("aws-sdk-go-v2 as %s printed no ARN:\n%s", c.name, s)
	}
	return s
}

// curlAs runs curl as attr's user and returns what it printed.
func curlAs(t *testing.T, attr func() *syscall.SysProcAttr, args ...string) string {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "--noproxy", "*", "--max-time", "10"}, args...)...)
	cmd.SysProcAttr = attr()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %q: %v", args, err)
	}
	return string(out)
}

// requestCount reads imds_shim_requests_total{class,code} from the
// daemon's metrics.
func requestCount(t *testing.T, class, code string) float64 {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:9254/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := fmt.Sprintf(`imds_shim_requests_total{class="%s",code="%s"} `, class, code)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

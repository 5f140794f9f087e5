// The real binary, as root, in a private network namespace against the moto
// STS emulator: start-up, clients with no configuration reaching
// 169.254.169.254, reload, stop, crash recovery and failed starts, each
// checked against the namespace's state before.

package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/internal/hoststate"
	"github.com/imds-shim/imds-shim/pkg/internal/moto"
	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

func TestMain(m *testing.M) { nstest.Main(m) }

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary is the imds-shim under test: $IMDS_SHIM_BIN (make test builds
// bin/imds-shim first), or a fresh build.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("IMDS_SHIM_BIN"); p != "" {
			binPath, buildErr = filepath.Abs(p)
			return
		}
		dir, err := os.MkdirTemp("", "imds-shim-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "imds-shim")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/imds-shim").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// netState is the namespace's links, addresses, iptables rules of both
// backends and sysctls, as facts (pkg/internal/hoststate).
func netState(t *testing.T) *hoststate.Snapshot {
	t.Helper()
	s, err := hoststate.Take(hoststate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// envWantLink names the link the daemon must put 169.254.169.254 on with the
// default `network.link: auto`; the stock-kernel suite sets it to imds0,
// where the dummy driver is known to exist.
const envWantLink = "IMDS_SHIM_TEST_WANT_LINK"

// redirectLink is the link that holds 169.254.169.254 in s: imds0, which
// must then be imds-shim's own dummy link, or lo where the kernel has no
// dummy driver. It fails t if $IMDS_SHIM_TEST_WANT_LINK names another.
func redirectLink(t *testing.T, s *hoststate.Snapshot) string {
	t.Helper()
	link := ""
	for _, a := range s.Addrs {
		if a.Prefix == "169.254.169.254/32" {
			link = a.Link
		}
	}
	switch {
	case link == "imds0" && !s.Has(`link imds0 kind dummy alias "imds-shim" up`):
		t.Errorf("169.254.169.254 is on an imds0 that is not imds-shim's dummy link:\n%s", strings.Join(s.Facts(), "\n"))
	case link != "imds0" && link != "lo":
		t.Errorf("169.254.169.254 is on %q, want imds0 or lo:\n%s", link, strings.Join(s.Facts(), "\n"))
	}
	if want := os.Getenv(envWantLink); want != "" && link != want {
		t.Errorf("169.254.169.254 is on %q, want %q ($%s)", link, want, envWantLink)
	}
	return link
}

type env struct {
	t      *testing.T
	dir    string
	moto   *moto.Server
	notify *net.UnixConn
	notes  chan string
}

func newEnv(t *testing.T) *env { return newEnvOn(t, "127.0.0.1") }

// newEnvOn is newEnv with moto listening on host (0.0.0.0 for clients in
// other namespaces).
func newEnvOn(t *testing.T, host string) *env {
	nstest.RequireRootNetns(t)
	e := &env{t: t, dir: t.TempDir(), moto: moto.Start(t, host), notes: make(chan string, 100)}
	// A root-owned source credentials file, as an operator would write.
	if err := os.WriteFile(filepath.Join(e.dir, "credentials"),
		[]byte("[default]\naws_access_key_id = AKIAINTEGRATIONTEST1\naws_secret_access_key = integration-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(e.dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	e.notify = c
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case e.notes <- string(buf[:n]):
			default:
			}
		}
	}()
	return e
}

func (e *env) writeConfig(role, extra string) string {
	p := filepath.Join(e.dir, "imds-shim.yaml")
	// The listener on a privileged port (issue 17's default with the
	// network managed): the daemon refuses one any user could bind.
	if !strings.Contains(extra, "imds:") {
		extra = "imds:\n  listen: 169.254.169.254:254\n" + extra
	}
	body := fmt.Sprintf("role_arn: arn:aws:iam::123456789012:role/%s\nsts_endpoint: %s\ncredentials_file: %s\nduration: 15m\nstart_timeout: 20s\n%s",
		role, e.moto.URL, filepath.Join(e.dir, "credentials"), extra)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

type daemonProc struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan error
}

func (e *env) serve(cfg string) *daemonProc {
	return e.start(exec.Command(binary(e.t), "serve", "-c", cfg, "--runtime-dir", filepath.Join(e.dir, "run")))
}

// start runs cmd (imds-shim serve, possibly behind a wrapper) with this
// env's notify socket, killing it when the test ends.
func (e *env) start(cmd *exec.Cmd) *daemonProc {
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(e.dir, "notify.sock"))
	d := &daemonProc{cmd: cmd, stderr: new(syncbuf.Buffer), done: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { d.done <- cmd.Wait() }()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.done
		if e.t.Failed() {
			e.t.Logf("daemon stderr:\n%s", d.stderr)
		}
	})
	return d
}

// waitNote waits for a notify message starting with prefix.
func (e *env) waitNote(prefix string, d *daemonProc) string {
	e.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-e.notes:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case err := <-d.done:
			d.done <- err
			e.t.Fatalf("daemon exited (%v) before %q:\n%s", err, prefix, d.stderr)
		case <-timeout:
			e.t.Fatalf("no %q from the daemon within 30s:\n%s", prefix, d.stderr)
		}
	}
}

func (d *daemonProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case err := <-d.done:
		d.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not exit within 30s:\n%s", d.stderr)
		return -1
	}
}

var imdsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// imdsToken gets an IMDSv2 token through 169.254.169.254.
func imdsToken(t *testing.T) string {
	t.Helper()
	return imdsTokenWith(t, imdsClient)
}

// imdsTokenWith gets an IMDSv2 token through 169.254.169.254 with client.
func imdsTokenWith(t *testing.T, client *http.Client) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://169.254.169.254/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "600")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d %s", resp.StatusCode, tok)
	}
	return string(tok)
}

// imdsGet fetches path through 169.254.169.254 with a new IMDSv2 token, as
// an SDK does.
func imdsGet(t *testing.T, path string) (int, string) {
	t.Helper()
	return imdsGetWith(t, imdsToken(t), path)
}

func imdsGetWith(t *testing.T, tok, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.254"+path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	resp, err := imdsClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// awsCLI runs the AWS CLI with no configuration at all: an empty HOME and
// no AWS_* variables. Its credentials can only come from 169.254.169.254.
func awsCLI(t *testing.T, e *env, args ...string) string {
	t.Helper()
	aws := "/usr/bin/aws" // Debian's AWS CLI v2
	if _, err := os.Stat(aws); err != nil {
		if aws, err = exec.LookPath("aws"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("no AWS CLI installed")
			}
			t.Skip("no AWS CLI installed")
		}
	}
	home := filepath.Join(e.dir, "home")
	os.MkdirAll(home, 0o700)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, aws, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", aws, args, err, out)
	}
	return string(out)
}

func TestServe(t *testing.T) {
	e := newEnv(t)
	before := netState(t)
	cfg := e.writeConfig("app", "")
	d := e.serve(cfg)
	ready := e.waitNote("READY=1", d)
	if !strings.Contains(ready, "STATUS=serving app; credentials expire ") {
		t.Errorf("READY message %q", ready)
	}
	link := redirectLink(t, netState(t))

	code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/")
	if code != 200 || body != "app" {
		t.Fatalf("role listing = %d %q", code, body)
	}
	code, body = imdsGet(t, "/latest/meta-data/iam/security-credentials/app")
	var doc struct{ Code, AccessKeyId, SecretAccessKey, Token, Expiration string }
	if err := json.Unmarshal([]byte(body), &doc); code != 200 || err != nil || doc.Code != "Success" || !strings.HasPrefix(doc.AccessKeyId, "ASIA") {
		t.Fatalf("credentials = %d %q (%v)", code, body, err)
	}

	// The AWS CLI, unconfigured, signs with what 169.254.169.254 served.
	out := awsCLI(t, e, "sts", "get-caller-identity", "--endpoint-url", e.moto.URL, "--region", "us-east-1", "--output", "text", "--query", "Arn")
	if !strings.Contains(out, "arn:aws:sts::123456789012:assumed-role/app/") {
		t.Errorf("get-caller-identity: %q", out)
	}

	// status talks to the running daemon.
	st, err := exec.Command(binary(t), "status", "--socket", filepath.Join(e.dir, "run", "control.sock")).CombinedOutput()
	if err != nil || !strings.Contains(string(st), "role:        arn:aws:iam::123456789012:role/app") ||
		!strings.Contains(string(st), "ok      address 169.254.169.254/32 on "+link) {
		t.Errorf("status: %v\n%s", err, st)
	}

	// /healthz proves the whole path, and /metrics counted the requests.
	if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if _, body := httpGet(t, "http://127.0.0.1:9254/metrics"); !strings.Contains(body, `imds_shim_requests_total{class="credentials",code="200"}`) ||
		!strings.Contains(body, "imds_shim_credentials_expiry_seconds") {
		t.Errorf("/metrics lacks request counts or expiry:\n%.2000s", body)
	} else if strings.Contains(body, `imds_shim_connections_closed_total{reason="ended"} 0`+"\n") ||
		!strings.Contains(body, `imds_shim_connections_closed_total{reason="ended"}`) {
		// The clients above each closed their connections.
		t.Errorf("/metrics counted no metadata connection ended:\n%.3000s", body)
	}

	// SIGHUP with a changed role serves the new role.
	e.writeConfig("other", "")
	d.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNote("RELOADING=1", d)
	if m := e.waitNote("READY=1", d); !strings.Contains(m, "serving other") {
		t.Errorf("READY after reload: %q", m)
	}
	if code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "other" {
		t.Errorf("after reload, role listing = %d %q", code, body)
	}
	out = awsCLI(t, e, "sts", "get-caller-identity", "--endpoint-url", e.moto.URL, "--region", "us-east-1", "--output", "text", "--query", "Arn")
	if !strings.Contains(out, "assumed-role/other/") {
		t.Errorf("after reload get-caller-identity: %q", out)
	}

	// An invalid config on SIGHUP is rejected; the old one keeps serving.
	if err := os.WriteFile(cfg, []byte("role_arn: not-an-arn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	e.waitNote("RELOADING=1", d)
	e.waitNote("READY=1", d)
	if code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "other" {
		t.Errorf("after a rejected reload, role listing = %d %q", code, body)
	}
	if !strings.Contains(d.stderr.String(), "reload rejected") {
		t.Errorf("no log line for the rejected reload")
	}

	// SIGTERM: STOPPING=1, exit 0, the namespace as it was.
	d.cmd.Process.Signal(syscall.SIGTERM)
	e.waitNote("STOPPING=1", d)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, d.stderr)
	}
	if diff := before.Diff(netState(t)); diff != "" {
		t.Errorf("namespace changed by a serve/stop cycle (-before +after):\n%s", diff)
	}
	// No secret, ours or the served ones, ever reaches the logs.
	for name, secret := range map[string]string{"source secret key": "integration-secret",
		"served secret key": doc.SecretAccessKey, "served session token": doc.Token} {
		if secret == "" || strings.Contains(d.stderr.String(), secret) {
			t.Errorf("%s is empty or appears in the logs", name)
		}
	}
}

// TestServeFailuresChangeNothing: a bad config and an unreachable STS each
// exit non-zero with their documented codes and leave the namespace as it was.
func TestServeFailuresChangeNothing(t *testing.T) {
	e := newEnv(t)
	before := netState(t)
	tests := []struct {
		name, config string
		code         int
		want         []string
	}{
		{"bad config", "role_arn: arn:aws:iam::123:role/x\nimds:\n  tokens: sometimes\n  hop_limt: 2\n", 3,
			[]string{`unknown key \"hop_limt\"`}},
		{"bad values", "role_arn: arn:aws:iam::123:role/x\nduration: 1m\nimds:\n  tokens: sometimes\n", 3,
			[]string{"role_arn", "duration", "imds.tokens"}},
		{"sts down", fmt.Sprintf("role_arn: arn:aws:iam::123456789012:role/app\nsts_endpoint: http://127.0.0.1:1\ncredentials_file: %s\nstart_timeout: 3s\nimds:\n  listen: 169.254.169.254:254\n",
			filepath.Join(e.dir, "credentials")), 4, []string{"fetching first credentials", "connection refused"}},
		// Any user could bind 8254 before us: refused before anything
		// is installed, as a configuration error.
		{"unprivileged port", fmt.Sprintf("role_arn: arn:aws:iam::123456789012:role/app\nsts_endpoint: %s\ncredentials_file: %s\nimds:\n  listen: 127.0.0.1:8254\n",
			e.moto.URL, filepath.Join(e.dir, "credentials")), 3, []string{"imds.listen: port 8254 can be bound by any user", "ip_unprivileged_port_start = 1024"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(e.dir, "bad.yaml")
			if err := os.WriteFile(p, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			d := e.serve(p)
			if code := d.wait(t); code != tt.code {
				t.Errorf("exit code %d, want %d:\n%s", code, tt.code, d.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(d.stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, d.stderr)
				}
			}
			if diff := before.Diff(netState(t)); diff != "" {
				t.Errorf("a failed start changed the namespace (-before +after):\n%s", diff)
			}
		})
	}
}

// TestCrashThenCleanupAndRestart: after SIGKILL the address and rules stay;
// `imds-shim cleanup` removes exactly them (twice is fine), and a start
// after a crash ends with exactly one copy of each.
func TestCrashThenCleanupAndRestart(t *testing.T) {
	e := newEnv(t)
	before := netState(t)
	cfg := e.writeConfig("app", "")
	d := e.serve(cfg)
	e.waitNote("READY=1", d)
	running := netState(t)
	redirectLink(t, running)
	// A token an SDK cached before the crash.
	tok := imdsToken(t)
	d.cmd.Process.Kill()
	d.wait(t)
	if diff := running.Diff(netState(t)); diff != "" {
		t.Fatalf("state changed by SIGKILL?\n%s", diff)
	}

	// Crash, then start again: the leftovers are cleaned, not duplicated.
	d = e.serve(cfg)
	e.waitNote("READY=1", d)
	if diff := running.Diff(netState(t)); diff != "" {
		t.Errorf("state after crash+restart differs from a clean start (-clean +restarted):\n%s", diff)
	}
	// The key in the runtime directory outlived the process, so the
	// token still works: clients need not notice the restart.
	if code, body := imdsGetWith(t, tok, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "app" {
		t.Errorf("token from before the restart: %d %q", code, body)
	}
	if code, _ := imdsGetWith(t, tok[:len(tok)-2]+"xx", "/latest/meta-data/iam/security-credentials/"); code != 401 {
		t.Errorf("forged token: %d, want 401", code)
	}
	d.cmd.Process.Kill()
	d.wait(t)

	for i := range 2 {
		out, err := exec.Command(binary(t), "cleanup").CombinedOutput()
		if err != nil {
			t.Fatalf("cleanup #%d: %v\n%s", i+1, err, out)
		}
		if diff := before.Diff(netState(t)); diff != "" {
			t.Errorf("after cleanup #%d (-before +after):\n%s", i+1, diff)
		}
	}
}

package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// The unit's capability set (systemd/imds-shim.service CapabilityBoundingSet).
var unitCaps = "-all,+net_admin,+net_raw,+net_bind_service"

// serveWithUnitCaps runs `imds-shim serve` as root limited to the unit's
// capability bounding set, as systemd runs it.
func (e *env) serveWithUnitCaps(cfg string) *daemonProc {
	e.t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		e.t.Skip("setpriv (util-linux) not installed")
	}
	return e.start(exec.Command(setpriv, "--bounding-set", unitCaps, "--inh-caps", "-all", "--",
		binary(e.t), "serve", "-c", cfg, "--runtime-dir", filepath.Join(e.dir, "run")))
}

// attackerScript binds addr:port as fast as it can, printing WON on every
// success, and its number of attempts when stopped. As a check that it is
// a capable attacker, it first binds an unprivileged port and says so.
const attackerScript = `
import signal, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
tries = 0
def stop(*_):
    print("TRIES", tries, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
c = socket.socket(); c.bind(("127.0.0.1", 0)); print("CAN-BIND", c.getsockname()[1], flush=True); c.close()
while True:
    tries += 1
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen(16)
        print("WON", tries, flush=True)
    except OSError:
        pass
    s.close()
`

type attacker struct {
	cmd  *exec.Cmd
	out  chan string
	done chan struct{}
}

// startAttacker runs attackerScript as nobody with no capabilities.
func startAttacker(t *testing.T, host string, port int) *attacker {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3 for the unprivileged attacker")
	}
	cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
		"--bounding-set=-all", py, "-c", attackerScript, host, fmt.Sprint(port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &attacker{cmd: cmd, out: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			a.out <- sc.Text()
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	select {
	case l := <-a.out:
		if !strings.HasPrefix(l, "CAN-BIND") {
			t.Fatalf("attacker: %q", l)
		}
	case <-a.done:
		t.Fatal("attacker exited before binding anything")
	}
	return a
}

// stop ends the attacker and returns what it printed after CAN-BIND.
func (a *attacker) stop(t *testing.T) []string {
	a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	a.cmd.Wait()
	var lines []string
	for {
		select {
		case l := <-a.out:
			lines = append(lines, l)
		default:
			return lines
		}
	}
}

// statusJSON reads `imds-shim status --json`.
func (e *env) statusJSON(t *testing.T) daemon.Status {
	t.Helper()
	out, err := exec.Command(binary(t), "status", "--json", "--socket", filepath.Join(e.dir, "run", "control.sock")).Output()
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var s daemon.Status
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// credentialClient keeps fetching credentials through 169.254.169.254, as
// SDKs do (token PUT, credential GET, a new connection each), recording
// every access key id served and every failure.
type credentialClient struct {
	mu       sync.Mutex
	keys     map[string]string // access key id → secret|token
	failures []string
	requests atomic.Int64
	paused   atomic.Bool
	stop     chan struct{}
	done     chan struct{}
}

func startCredentialClient() *credentialClient {
	c := &credentialClient{keys: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			key, secret, token, err := fetchCredentials()
			if c.paused.Load() {
				if err == nil {
					c.record(key, secret, token)
				}
				continue
			}
			c.requests.Add(1)
			if err != nil {
				c.mu.Lock()
				c.failures = append(c.failures, err.Error())
				c.mu.Unlock()
				continue
			}
			c.record(key, secret, token)
		}
	}()
	return c
}

func (c *credentialClient) record(key, secret, token string) {
	c.mu.Lock()
	c.keys[key] = secret + "|" + token
	c.mu.Unlock()
}

func (c *credentialClient) finish() {
	close(c.stop)
	<-c.done
}

func fetchCredentials() (key, secret, token string, err error) {
	req, _ := http.NewRequest(http.MethodPut, "http://169.254.169.254/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := imdsClient.Do(req)
	if err != nil {
		return "", "", "", fmt.Errorf("token: %w", err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", "", "", fmt.Errorf("token: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://169.254.169.254/latest/meta-data/iam/security-credentials/app", nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(tok))
	resp, err = imdsClient.Do(req)
	if err != nil {
		return "", "", "", fmt.Errorf("credentials: %w", err)
	}
	defer resp.Body.Close()
	var doc struct{ AccessKeyId, SecretAccessKey, Token string }
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != 200 {
		return "", "", "", fmt.Errorf("credentials: %d %v", resp.StatusCode, err)
	}
	return doc.AccessKeyId, doc.SecretAccessKey, doc.Token, nil
}

// issuedByMoto asks the STS that issued the daemon's credentials who a
// served key belongs to: only keys from its AssumeRole of app say so.
func issuedByMoto(t *testing.T, e *env, key, secretToken string) bool {
	t.Helper()
	secret, token, _ := strings.Cut(secretToken, "|")
	aws, err := exec.LookPath("aws")
	if err != nil {
		if aws = "/usr/bin/aws"; func() bool { _, err := os.Stat(aws); return err != nil }() {
			t.Skip("no AWS CLI installed")
		}
	}
	home := filepath.Join(e.dir, "home")
	os.MkdirAll(home, 0o700)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, aws, "sts", "get-caller-identity", "--endpoint-url", e.moto.URL, "--region", "us-east-1",
		"--output", "text", "--query", "Arn")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "AWS_ACCESS_KEY_ID=" + key,
		"AWS_SECRET_ACCESS_KEY=" + secret, "AWS_SESSION_TOKEN=" + token, "AWS_EC2_METADATA_DISABLED=true"}
	out, err := cmd.CombinedOutput()
	return err == nil && strings.Contains(string(out), "assumed-role/app/")
}

// TestListenerCannotBeTaken is issue 17's kernel test: with the daemon
// under the unit's capability set, an unprivileged process spinning on
// bind(listener address, port) never gets it — before start, while
// serving, through 50 reloads that change imds.hop_limit and imds.listen,
// and across kill -9 and a restart — and every credential document served
// meanwhile is the daemon's. No request is refused during the reloads.
func TestListenerCannotBeTaken(t *testing.T) {
	e := newEnv(t)
	const host = "169.254.169.254"
	ports := []int{254, 253}
	config := func(i int) string {
		return e.writeConfig("app", fmt.Sprintf("imds:\n  listen: %s:%d\n  hop_limit: %d\n", host, ports[i/10%2], 1+i%2))
	}
	// One attacker per port the daemon will hold, spinning from before
	// the start.
	var attackers []*attacker
	for _, p := range ports {
		attackers = append(attackers, startAttacker(t, host, p))
	}

	cfg := config(0)
	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)
	if st := e.statusJSON(t); st.Listen != fmt.Sprintf("%s:%d", host, ports[0]) {
		t.Fatalf("status --json listen = %q", st.Listen)
	}
	client := startCredentialClient()
	defer func() {
		select {
		case <-client.done:
		default:
			client.finish()
		}
	}()

	for i := 1; i <= 50; i++ {
		config(i)
		d.cmd.Process.Signal(syscall.SIGHUP)
		e.waitNote("RELOADING=1", d)
		e.waitNote("READY=1", d)
		st := e.statusJSON(t)
		if want := fmt.Sprintf("%s:%d", host, ports[i/10%2]); st.Listen != want || st.HopLimit != 1+i%2 || st.LastReloadError != "" {
			t.Fatalf("reload %d: listen %s hop %d error %q; want %s hop %d", i, st.Listen, st.HopLimit, st.LastReloadError, want, 1+i%2)
		}
	}
	client.mu.Lock()
	failures := append([]string(nil), client.failures...)
	client.mu.Unlock()
	served := client.requests.Load()
	if len(failures) != 0 {
		t.Errorf("%d of %d credential fetches failed during 50 reloads; first: %s", len(failures), served, failures[0])
	}
	t.Logf("%d credential fetches across 50 reloads", served)

	// kill -9, cleanup as ExecStopPost does, restart.
	client.paused.Store(true)
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.done <- nil
	if out, err := exec.Command(binary(t), "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	d2 := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d2)
	client.finish()
	for i := range 20 {
		key, secret, token, err := fetchCredentials()
		if err != nil {
			t.Fatalf("fetch %d after the restart: %v", i, err)
		}
		client.record(key, secret, token)
	}

	for i, a := range attackers {
		lines := a.stop(t)
		tries := ""
		for _, l := range lines {
			if strings.HasPrefix(l, "WON") {
				t.Errorf("nobody bound %s:%d (%s)", host, ports[i], l)
			}
			if strings.HasPrefix(l, "TRIES") {
				tries = l
			}
		}
		if tries == "" {
			t.Errorf("attacker on port %d did not report its attempts: %q", ports[i], lines)
		}
		t.Logf("attacker on %s:%d: %s, never bound", host, ports[i], tries)
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	if len(client.keys) == 0 {
		t.Fatal("no credentials served")
	}
	for key, st := range client.keys {
		if !issuedByMoto(t, e, key, st) {
			t.Errorf("served access key %s was not issued to the daemon by STS", key)
		}
	}
	t.Logf("%d distinct access keys served, all the daemon's", len(client.keys))
}

// TestHealthzImpostor: a process other than the daemon answering on the
// redirect path (here a rule sending 169.254.169.254:80 to it, ahead of
// ours) makes /healthz 503 at its next probe; removing it makes it 200.
func TestHealthzImpostor(t *testing.T) {
	e := newEnv(t)
	d := e.serve(e.writeConfig("app", ""))
	e.waitNote("READY=1", d)
	requestCounts := func() string {
		_, body := httpGet(t, "http://127.0.0.1:9254/metrics")
		var lines []string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "imds_shim_requests_total") {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	counted := requestCounts()
	for range 5 {
		if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 200 {
			t.Fatalf("/healthz before = %d %q", code, body)
		}
	}
	// Ten self-probes later (listener and endpoint), no request counted.
	if now := requestCounts(); now != counted {
		t.Errorf("self-probes counted as requests:\nbefore:\n%s\nafter:\n%s", counted, now)
	}
	impostor := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "EC2ws")
		io.WriteString(w, strings.Repeat("0", 64)) // a plausible answer
	})}
	ln, err := net.Listen("tcp", "169.254.169.254:9999")
	if err != nil {
		t.Fatal(err)
	}
	go impostor.Serve(ln)
	defer impostor.Close()
	// Ahead of the daemon's rules in both backends: the first DNAT of a
	// connection wins.
	ipt := func(op string) {
		t.Helper()
		for _, bin := range []string{"iptables-nft", "iptables-legacy"} {
			args := []string{"-w", "-t", "nat", op, "OUTPUT", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
				"-j", "DNAT", "--to-destination", "169.254.169.254:9999"}
			if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
			}
		}
	}
	ipt("-I")
	code, body := httpGet(t, "http://127.0.0.1:9254/healthz")
	if code != 503 || !strings.Contains(body, "does not reach this imds-shim") {
		t.Errorf("/healthz with an impostor on the redirect = %d %q, want 503", code, body)
	}
	ipt("-D")
	if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 200 {
		t.Errorf("/healthz after the impostor left = %d %q", code, body)
	}
}

// squatterScript holds addr:port (bound and listening, answering nothing)
// until SIGTERM.
const squatterScript = `
import signal, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("HOLDING", flush=True)
signal.sigwait({signal.SIGTERM})
`

// TestMetricsPortSquatted: an unprivileged user who holds the metrics
// port (9254, unprivileged) before the daemon starts does not keep it
// from serving credentials; once the port is free the daemon binds it.
func TestMetricsPortSquatted(t *testing.T) {
	e := newEnv(t)
	cmd := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all",
		"--bounding-set=-all", "/usr/bin/python3", "-c", squatterScript, "127.0.0.1", "9254")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("setpriv and python3 for the unprivileged squatter: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if l, _ := bufio.NewReader(out).ReadString('\n'); l != "HOLDING\n" {
		t.Fatalf("squatter: %q", l)
	}

	d := e.serveWithUnitCaps(e.writeConfig("app", ""))
	e.waitNote("READY=1", d)
	if _, _, _, err := fetchCredentials(); err != nil {
		t.Fatalf("credentials while the metrics port is held: %v", err)
	}
	if st := e.statusJSON(t); !strings.Contains(st.MetricsError, "address already in use") {
		t.Fatalf("status metrics_error = %q, want the held address named", st.MetricsError)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// The daemon tries again every 5 s: poll its status until it has.
	deadline := time.After(30 * time.Second)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for st := e.statusJSON(t); st.MetricsError != ""; st = e.statusJSON(t) {
		select {
		case <-deadline:
			t.Fatalf("metrics listener not bound 30 s after the port was freed: %s", st.MetricsError)
		case <-poll.C:
		}
	}
	if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 200 {
		t.Errorf("/healthz once the port is free = %d %q", code, body)
	}
}

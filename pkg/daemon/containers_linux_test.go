// The real binary, with the unit's capability set, on a host with
// containers and a neighbour (issue 13): bridges, veth pairs and
// "container" network namespaces inside the test's private namespace,
// which plays the host. The namespaces are held by `unshare --net sleep`
// processes, so nothing is named in /run/netns; every link is named p2*
// and removed at the end.
//
// The state is compared as facts, with pkg/internal/hoststate.

package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// p2ns is a network namespace held open by a sleeping process.
type p2ns struct {
	name string
	pid  int
	cmd  *exec.Cmd
}

func newP2NS(t *testing.T, name string) *p2ns {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "sh", "-c", "echo ready; exec sleep infinity")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &p2ns{name: name, pid: cmd.Process.Pid, cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("starting namespace %s: %q, %v", name, line, err)
	}
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

// netns is the namespace as nsenter --net takes it.
func (n *p2ns) netns() string { return fmt.Sprintf("--net=/proc/%d/ns/net", n.pid) }

func (n *p2ns) run(t *testing.T, args ...string) string {
	t.Helper()
	return mustRun(t, "nsenter", append([]string{n.netns()}, args...)...)
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// curlIMDSv2 fetches path from base inside n as an SDK does: a token by
// PUT, then the GET with it. It fails fast: a dropped SYN times out after
// a second.
func (n *p2ns) curlIMDSv2(base, path string) (string, error) {
	out, err := exec.Command("nsenter", n.netns(), "sh", "-c", curlScript, "sh", base, path).CombinedOutput()
	return string(out), err
}

// curlScript gets "$1$2" over IMDSv2 with curl.
const curlScript = `set -e
c() { curl -sS --fail --globoff --noproxy '*' --connect-timeout 1 -m 5 "$@"; }
tok=$(c -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" "$1/latest/api/token")
c -H "X-aws-ec2-metadata-token: $tok" "$1$2"`

// p2topo builds, in the test's namespace (the host):
//
//	p2br0 (10.77.1.1, fd77:1::1)  configured bridge    <- c1 (.2)
//	p2br1 (10.77.2.1, fd77:2::1)  unconfigured bridge  <- c2 (.2)
//	p2up0 (10.77.9.1, fd77:9::1)  the uplink veth      <- nb, a neighbour (.2)
type p2topo struct{ c1, c2, nb *p2ns }

var p2links = []string{"p2br0", "p2br1", "p2c1h", "p2c2h", "p2up0"}

func newP2Topo(t *testing.T) p2topo {
	t.Helper()
	tp := p2topo{c1: newP2NS(t, "c1"), c2: newP2NS(t, "c2"), nb: newP2NS(t, "nb")}
	t.Cleanup(func() {
		for _, l := range p2links {
			_ = exec.Command("ip", "link", "del", l).Run()
		}
	})
	addr := func(ns *p2ns, link, cidr string) {
		args := []string{"ip", "addr", "add", cidr, "dev", link}
		if strings.Contains(cidr, ":") {
			args = append(args, "nodad")
		}
		if ns == nil {
			mustRun(t, args[0], args[1:]...)
		} else {
			ns.run(t, args...)
		}
	}
	// No kernel-made link-local addresses on the host's side: they appear
	// whenever the carrier does, which would make the state comparison
	// depend on timing. Links that route IPv6 get a fixed one instead:
	// the host needs one to send neighbour solicitations for a reply
	// whose source ([fd00:ec2::254]) is not on the link.
	newLink := func(args ...string) {
		mustRun(t, "ip", append([]string{"link", "add"}, args...)...)
		mustRun(t, "ip", "link", "set", "dev", args[0], "addrgenmode", "none")
	}
	for i, br := range []string{"p2br0", "p2br1"} {
		newLink(br, "type", "bridge")
		addr(nil, br, "fe80::1/64")
		addr(nil, br, fmt.Sprintf("10.77.%d.1/24", i+1))
		addr(nil, br, fmt.Sprintf("fd77:%d::1/64", i+1))
		mustRun(t, "ip", "link", "set", br, "up")
	}
	peer := func(host string, ns *p2ns, bridge string, n int) {
		newLink(host, "type", "veth", "peer", "name", "p2eth0")
		mustRun(t, "ip", "link", "set", "p2eth0", "netns", strconv.Itoa(ns.pid))
		if bridge != "" {
			mustRun(t, "ip", "link", "set", host, "master", bridge)
		} else {
			addr(nil, host, fmt.Sprintf("10.77.%d.1/24", n))
			addr(nil, host, fmt.Sprintf("fd77:%d::1/64", n))
			addr(nil, host, "fe80::1/64")
		}
		mustRun(t, "ip", "link", "set", host, "up")
		addr(ns, "p2eth0", fmt.Sprintf("10.77.%d.2/24", n))
		addr(ns, "p2eth0", fmt.Sprintf("fd77:%d::2/64", n))
		ns.run(t, "ip", "link", "set", "p2eth0", "up")
		ns.run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.77.%d.1", n))
		ns.run(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd77:%d::1", n))
	}
	peer("p2c1h", tp.c1, "p2br0", 1)
	peer("p2c2h", tp.c2, "p2br1", 2)
	peer("p2up0", tp.nb, "", 9)
	return tp
}

// hostFacts is the namespace's state as facts (pkg/internal/hoststate):
// links, addresses, the rules of iptables, ip6tables and arptables in both
// backends, and the sysctls that decide who reaches a local address.
func hostFacts(t *testing.T) string {
	t.Helper()
	return strings.Join(netState(t).Facts(), "\n") + "\n"
}

var (
	goclientOnce sync.Once
	goclientPath string
	goclientErr  error
)

// goclient is test/e2e/goclient: the AWS SDK for Go v2 with its default
// configuration, which gets credentials and calls GetCallerIdentity.
func goclient(t *testing.T) string {
	t.Helper()
	goclientOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imds-shim-goclient")
		if err != nil {
			goclientErr = err
			return
		}
		goclientPath = filepath.Join(dir, "goclient")
		if out, err := exec.Command("go", "build", "-o", goclientPath, "../../test/e2e/goclient").CombinedOutput(); err != nil {
			goclientErr = fmt.Errorf("go build goclient: %v: %s", err, out)
		}
	})
	if goclientErr != nil {
		t.Fatal(goclientErr)
	}
	return goclientPath
}

// sdkEnv is an environment with no AWS configuration at all, so that the
// instance metadata service is the only place credentials can come from,
// plus extra.
func sdkEnv(t *testing.T, extra ...string) []string {
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8",
		"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}
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
	return append(env, extra...)
}

// inNS runs a command in ns (nil: the host) with env, and returns its
// standard output.
func inNS(t *testing.T, ns *p2ns, env []string, name string, args ...string) (string, error) {
	t.Helper()
	if ns != nil {
		args = append([]string{ns.netns(), name}, args...)
		name = "nsenter"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v\n%s", err, stderr.String())
	}
	return string(out), nil
}

// botoKey runs test/clients/boto_imds.py (boto3, unmodified) and returns
// the access key id it got from the metadata service.
func botoKey(t *testing.T, ns *p2ns, mode string) (string, error) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	out, err := inNS(t, ns, sdkEnv(t, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE="+mode), py, "../../test/clients/boto_imds.py")
	if err != nil {
		return "", err
	}
	var got struct {
		Method      string `json:"method"`
		AccessKeyID string `json:"accessKeyId"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Method != "iam-role" {
		return "", fmt.Errorf("boto3 printed %q (%v), want credentials from iam-role", out, err)
	}
	return got.AccessKeyID, nil
}

// docKey returns the AccessKeyId of a credentials document.
func docKey(t *testing.T, body string) string {
	t.Helper()
	var doc struct{ Code, AccessKeyId string }
	if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.Code != "Success" || !strings.HasPrefix(doc.AccessKeyId, "ASIA") {
		t.Errorf("not a credentials document: %q (%v)", body, err)
	}
	return doc.AccessKeyId
}

// containersConfig is the daemon's configuration for the topology: the
// containers of p2br0 redirected; every source range of the topology
// allowed by imds.allowed_cidrs, so that only the redirect's rules decide
// who gets an answer.
func (e *env) containersConfig(stsURL, ipv6, backend string) string {
	p := filepath.Join(e.dir, "imds-shim.yaml")
	body := fmt.Sprintf(`role_arn: arn:aws:iam::123456789012:role/app
sts_endpoint: %s
credentials_file: %s
region: us-east-1
duration: 15m
start_timeout: 20s
imds:
  listen: 169.254.169.254:254
  allowed_cidrs: [10.77.0.0/16, "fd77::/16"]
network:
  containers: [p2br0]
  ipv6: %s
  backend: %s
  reconcile_interval: 1h
`, stsURL, filepath.Join(e.dir, "credentials"), ipv6, backend)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// TestContainersAndIPv6 is issue 13's "must show" with the real binary
// under the unit's capabilities: a container on a configured bridge gets
// credentials at http://169.254.169.254/ and http://[fd00:ec2::254]/ with
// curl over IMDSv2, boto3 and aws-sdk-go-v2 (IPv6 endpoint mode), as the
// host does; a container on an unconfigured bridge gets nothing, and a
// neighbour on the uplink gets nothing at the endpoint or the listener's
// port over IPv4 or IPv6, and cannot resolve 169.254.169.254 by ARP.
// status and check show both listeners and who can reach them. After a
// stop, and after kill -9 and `imds-shim cleanup`, the host's state is
// what it was.
func TestContainersAndIPv6(t *testing.T) {
	e := newEnvOn(t, "0.0.0.0")
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skipf("no IPv6 in this kernel: %v", err)
	}
	tp := newP2Topo(t)
	before := hostFacts(t)
	for _, be := range []string{"nft", "legacy"} {
		t.Run(be, func(t *testing.T) {
			parent := e.t
			e.t = t
			defer func() { e.t = parent }()
			containersCase(t, e, tp, before, be)
		})
	}
}

func containersCase(t *testing.T, e *env, tp p2topo, before, backend string) {
	port := e.moto.URL[strings.LastIndex(e.moto.URL, ":")+1:]
	cfg := e.containersConfig("http://127.0.0.1:"+port, "auto", backend)

	// check, before anything runs, says who can reach each listener.
	out := mustRun(t, binary(t), "check", "-c", cfg, "--no-sts")
	for _, want := range []string{"listener:  169.254.169.254:254", "listener:  [fd00:ec2::254]:254",
		"reachable by processes on this host and containers on p2br0;"} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}

	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)

	// status lists both listeners, in the backend asked for, with the
	// ARP fence in place.
	var st struct {
		Listeners []string
		Network   struct {
			Backend string
			ARP     bool
		}
	}
	raw := mustRun(t, binary(t), "status", "--json", "--socket", filepath.Join(e.dir, "run", "control.sock"))
	if err := json.Unmarshal([]byte(raw), &st); err != nil || !cmp.Equal(st.Listeners, []string{"169.254.169.254:254", "[fd00:ec2::254]:254"}) {
		t.Errorf("status listeners = %q (%v), want the IPv4 and IPv6 listeners", st.Listeners, err)
	}
	if st.Network.Backend != backend || !st.Network.ARP {
		t.Errorf("status: backend %q, ARP fence %t; want %s, true", st.Network.Backend, st.Network.ARP, backend)
	}

	// The host, over both endpoints.
	const credPath = "/latest/meta-data/iam/security-credentials/app"
	code, body := imdsGet(t, credPath)
	if code != 200 {
		t.Fatalf("host: %d %q", code, body)
	}
	key := docKey(t, body)
	curlHost := func(base string) (string, error) {
		out, err := exec.Command("sh", "-c", curlScript, "sh", base, credPath).CombinedOutput()
		return string(out), err
	}
	if got, err := curlHost("http://[fd00:ec2::254]"); err != nil || docKey(t, got) != key {
		t.Errorf("host, IPv6: %q, %v", got, err)
	}

	// A container on the configured bridge: curl over IMDSv2, both
	// endpoints, the same credentials as the host.
	for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
		if got, err := tp.c1.curlIMDSv2(base, credPath); err != nil || docKey(t, got) != key {
			t.Errorf("container on p2br0, %s: %q, %v", base, got, err)
		}
	}
	// boto3, unmodified, on both endpoints, from the container and the
	// host.
	for _, ns := range []*p2ns{tp.c1, nil} {
		for _, mode := range []string{"IPv4", "IPv6"} {
			name := "host"
			if ns != nil {
				name = "container on p2br0"
			}
			if got, err := botoKey(t, ns, mode); err != nil || got != key {
				t.Errorf("%s, boto3, endpoint mode %s: key %q, %v", name, mode, got, err)
			}
		}
	}
	// aws-sdk-go-v2 in IPv6 endpoint mode, signing a real call to STS with
	// what it got (the container reaches moto at its bridge's gateway).
	for _, c := range []struct {
		name string
		ns   *p2ns
		sts  string
	}{{"host", nil, "http://127.0.0.1:" + port}, {"container on p2br0", tp.c1, "http://10.77.1.1:" + port}} {
		out, err := inNS(t, c.ns, sdkEnv(t, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6", "AWS_ENDPOINT_URL_STS="+c.sts), goclient(t))
		if err != nil || !strings.Contains(out, "arn=arn:aws:sts::123456789012:assumed-role/app/") || !strings.Contains(out, "source=EC2RoleProvider") {
			t.Errorf("%s, aws-sdk-go-v2, IPv6: %q, %v", c.name, out, err)
		}
	}

	// /healthz proves both endpoints reach this process: with the IPv6
	// redirect gone (and no repair before the next hour) it fails.
	if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 200 {
		t.Errorf("/healthz = %d %q", code, body)
	}
	rule := []string{"-t", "nat", "-D", "IMDS-SHIM-OUTPUT", "-d", "fd00:ec2::254/128", "-p", "tcp", "-m", "tcp", "--dport", "80",
		"-m", "comment", "--comment", "imds-shim", "-j", "DNAT", "--to-destination", "[fd00:ec2::254]:254"}
	mustRun(t, "ip6tables-"+backend, rule...)
	if code, body := httpGet(t, "http://127.0.0.1:9254/healthz"); code != 503 || !strings.Contains(body, "http://[fd00:ec2::254]:80/ does not reach this imds-shim") {
		t.Errorf("/healthz without the IPv6 redirect = %d %q, want 503 naming it", code, body)
	}
	rule[2] = "-A"
	mustRun(t, "ip6tables-"+backend, rule...)

	// A container on a bridge that is not configured: nothing, not even
	// the listener's port directly (its range is in allowed_cidrs: the
	// rules decide, not the allowlist).
	mustNothing := func(ns *p2ns, urls ...string) {
		t.Helper()
		for _, u := range urls {
			if got, err := ns.curlIMDSv2(u, "/latest/meta-data/"); err == nil {
				t.Errorf("%s: %s answered %q; want no answer", ns.name, u, got)
			}
		}
	}
	all := []string{"http://169.254.169.254", "http://169.254.169.254:254", "http://[fd00:ec2::254]", "http://[fd00:ec2::254]:254"}
	mustNothing(tp.c2, all...)

	// A neighbour routing the endpoints via the host.
	tp.nb.run(t, "ip", "route", "replace", "169.254.169.254/32", "via", "10.77.9.1")
	tp.nb.run(t, "ip", "-6", "route", "replace", "fd00:ec2::254/128", "via", "fd77:9::1")
	mustNothing(tp.nb, append(all, "http://169.254.169.254:8254")...)
	// On-link: the host does not answer ARP for the address.
	tp.nb.run(t, "ip", "route", "replace", "169.254.169.254/32", "dev", "p2eth0")
	tp.nb.run(t, "ip", "neigh", "flush", "dev", "p2eth0")
	mustNothing(tp.nb, "http://169.254.169.254")
	if n := tp.nb.run(t, "ip", "neigh", "show", "169.254.169.254", "dev", "p2eth0"); strings.Contains(n, "lladdr") {
		t.Errorf("the neighbour resolved 169.254.169.254 by ARP: %q", n)
	}

	// Stop: the host as it was.
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after a stop differs (-before +after):\n%s", diff)
	}
	if got, err := tp.c1.curlIMDSv2("http://169.254.169.254", credPath); err == nil {
		t.Errorf("after stop the container still got %q", got)
	}

	// kill -9, then cleanup: the host as it was.
	d = e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)
	d.cmd.Process.Kill()
	d.wait(t)
	if hostFacts(t) == before {
		t.Fatal("kill -9 left nothing behind; the cleanup below would prove nothing")
	}
	if out, err := exec.Command(binary(t), "cleanup").CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after kill -9 and cleanup differs (-before +after):\n%s", diff)
	}
}

// TestIPv6DisabledStartsCleanly: with net.ipv6.conf.all.disable_ipv6=1,
// ipv6: auto starts and serves IPv4 with one info line and no IPv6
// listener, and leaves the host as it was; ipv6: true refuses to start
// (a network error, not a crash loop of config errors) and changes nothing.
func TestIPv6DisabledStartsCleanly(t *testing.T) {
	e := newEnv(t)
	const key = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
	old, err := os.ReadFile(key)
	if err != nil {
		t.Skipf("no IPv6 in this kernel: %v", err)
	}
	if err := os.WriteFile(key, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(key, old, 0o644) })
	before := hostFacts(t)

	cfg := e.writeConfig("app", "network:\n  ipv6: auto\n")
	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)
	if code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "app" {
		t.Errorf("IPv4 with IPv6 disabled: %d %q", code, body)
	}
	var st struct{ Listeners []string }
	raw := mustRun(t, binary(t), "status", "--json", "--socket", filepath.Join(e.dir, "run", "control.sock"))
	if err := json.Unmarshal([]byte(raw), &st); err != nil || !cmp.Equal(st.Listeners, []string{"169.254.169.254:254"}) {
		t.Errorf("status listeners = %q (%v), want the IPv4 listener only", st.Listeners, err)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	logs := d.stderr.String()
	if n := strings.Count(logs, "not answering at the IPv6 endpoint"); n != 1 || strings.Contains(logs, "level=ERROR") {
		t.Errorf("want exactly one line about IPv6 and no error, got %d:\n%s", n, logs)
	}
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after a stop differs (-before +after):\n%s", diff)
	}

	e.writeConfig("app", "network:\n  ipv6: \"true\"\n")
	d = e.serveWithUnitCaps(cfg)
	if code := d.wait(t); code != 5 || !strings.Contains(d.stderr.String(), "disable_ipv6") {
		t.Errorf("ipv6: true with IPv6 disabled: exit %d, want 5 naming disable_ipv6:\n%s", code, d.stderr)
	}
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after a refused start differs (-before +after):\n%s", diff)
	}
}

// TestReloadMovesListeners: with the real binary, reloads that turn IPv6
// off and on again and change the port move the listeners and the
// redirect together; a container on the configured bridge is served at
// both endpoints after each, and a stop leaves the host as it was.
func TestReloadMovesListeners(t *testing.T) {
	e := newEnvOn(t, "0.0.0.0")
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skipf("no IPv6 in this kernel: %v", err)
	}
	tp := newP2Topo(t)
	before := hostFacts(t)
	port := e.moto.URL[strings.LastIndex(e.moto.URL, ":")+1:]
	sts := "http://127.0.0.1:" + port
	cfg := e.containersConfig(sts, "auto", "auto")
	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)
	sock := filepath.Join(e.dir, "run", "control.sock")
	listeners := func() []string {
		var st struct {
			Listeners       []string
			LastReloadError string `json:"last_reload_error"`
		}
		if err := json.Unmarshal([]byte(mustRun(t, binary(t), "status", "--json", "--socket", sock)), &st); err != nil {
			t.Fatal(err)
		}
		if st.LastReloadError != "" {
			t.Errorf("reload rejected: %s", st.LastReloadError)
		}
		return st.Listeners
	}
	reload := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		d.cmd.Process.Signal(syscall.SIGHUP)
		e.waitNote("RELOADING=1", d)
		e.waitNote("READY=1", d)
	}
	const credPath = "/latest/meta-data/iam/security-credentials/app"
	served := func(base string) bool {
		got, err := tp.c1.curlIMDSv2(base, credPath)
		return err == nil && strings.Contains(got, `"Code" : "Success"`)
	}
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}

	reload(strings.Replace(string(orig), "ipv6: auto", "ipv6: \"false\"", 1))
	if got := listeners(); !cmp.Equal(got, []string{"169.254.169.254:254"}) {
		t.Errorf("ipv6 false: listeners %q", got)
	}
	if !served("http://169.254.169.254") || served("http://[fd00:ec2::254]") {
		t.Errorf("ipv6 false: IPv4 served %t, IPv6 served %t; want true, false", served("http://169.254.169.254"), served("http://[fd00:ec2::254]"))
	}

	reload(string(orig))
	if got := listeners(); !cmp.Equal(got, []string{"169.254.169.254:254", "[fd00:ec2::254]:254"}) {
		t.Errorf("ipv6 auto again: listeners %q", got)
	}
	if !served("http://169.254.169.254") || !served("http://[fd00:ec2::254]") {
		t.Error("ipv6 auto again: an endpoint is not served")
	}

	reload(strings.Replace(string(orig), "169.254.169.254:254", "169.254.169.254:253", 1))
	if got := listeners(); !cmp.Equal(got, []string{"169.254.169.254:253", "[fd00:ec2::254]:253"}) {
		t.Errorf("port 253: listeners %q", got)
	}
	if !served("http://169.254.169.254") || !served("http://[fd00:ec2::254]") {
		t.Error("port 253: an endpoint is not served")
	}
	// The old port is closed, so the container cannot reach it either.
	if got, err := tp.c1.curlIMDSv2("http://169.254.169.254:254", credPath); err == nil {
		t.Errorf("the old listener still answers: %q", got)
	}

	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after reloads and a stop differs (-before +after):\n%s", diff)
	}
}

// TestWithoutArptables: on a host without arptables the daemon starts
// and serves, warns once, status says so, and stop and cleanup leave the
// host as it was.
func TestWithoutArptables(t *testing.T) {
	e := newEnv(t)
	before := hostFacts(t)
	// PATH as on a host without arptables: everything else of /usr/sbin.
	bin := t.TempDir()
	ents, err := os.ReadDir("/usr/sbin")
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if !strings.HasPrefix(ent.Name(), "arptables") {
			if err := os.Symlink(filepath.Join("/usr/sbin", ent.Name()), filepath.Join(bin, ent.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	oldPath := os.Getenv("PATH")
	os.Setenv("PATH", bin+":/usr/local/bin:/usr/bin:/bin")
	defer os.Setenv("PATH", oldPath)

	cfg := e.writeConfig("app", "")
	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)
	if code, body := imdsGet(t, "/latest/meta-data/iam/security-credentials/"); code != 200 || body != "app" {
		t.Errorf("without arptables: %d %q", code, body)
	}
	st := mustRun(t, binary(t), "status", "--socket", filepath.Join(e.dir, "run", "control.sock"))
	if !strings.Contains(st, "WARNING arptables is not installed") {
		t.Errorf("status does not say arptables is missing:\n%s", st)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if n := strings.Count(d.stderr.String(), "level=WARN msg=\"arptables is not installed"); n != 1 {
		t.Errorf("want one warning about arptables, got %d:\n%s", n, d.stderr)
	}
	if out, err := exec.Command(binary(t), "cleanup").CombinedOutput(); err != nil {
		t.Errorf("cleanup without arptables: %v\n%s", err, out)
	}
	os.Setenv("PATH", oldPath)
	if diff := cmp.Diff(before, hostFacts(t)); diff != "" {
		t.Errorf("state after a stop without arptables differs (-before +after):\n%s", diff)
	}
}

// TestContainerSourcesRole: a roles entry with sources gives containers in
// that range its role, over IPv4 and IPv6, while the host keeps the
// top-level role (a container is never taken for a host caller).
func TestContainerSourcesRole(t *testing.T) {
	e := newEnvOn(t, "0.0.0.0")
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skipf("no IPv6 in this kernel: %v", err)
	}
	tp := newP2Topo(t)
	port := e.moto.URL[strings.LastIndex(e.moto.URL, ":")+1:]
	cfg := e.containersConfig("http://127.0.0.1:"+port, "auto", "auto")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "roles:\n  - role_arn: arn:aws:iam::123456789012:role/ci\n    sources: [10.77.1.0/24, \"fd77:1::/64\"]\n")
	f.Close()
	d := e.serveWithUnitCaps(cfg)
	e.waitNote("READY=1", d)

	const list = "/latest/meta-data/iam/security-credentials/"
	for _, base := range []string{"http://169.254.169.254", "http://[fd00:ec2::254]"} {
		if got, err := tp.c1.curlIMDSv2(base, list); err != nil || got != "ci" {
			t.Errorf("container in sources, %s: role list %q, %v; want ci", base, got, err)
		}
		if got, err := tp.c1.curlIMDSv2(base, list+"ci"); err != nil || !strings.Contains(got, `"Code" : "Success"`) {
			t.Errorf("container in sources, %s: credentials %q, %v", base, got, err)
		}
	}
	if code, body := imdsGet(t, list); code != 200 || body != "app" {
		t.Errorf("host: role list %d %q; want app", code, body)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
}

package netredirect

// A host with containers and a neighbour, on the real kernel: bridges,
// veth pairs and "container" network namespaces inside the test's private
// namespace (which plays the host). The namespaces are held by `unshare
// --net sleep` processes, so nothing is named in /run/netns and everything
// disappears with the test.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
)

// childNS is a network namespace held open by a sleeping process.
type childNS struct {
	name string
	pid  int
	cmd  *exec.Cmd
}

// close ends the namespace's process (its links must be gone already:
// the kernel dismantles a namespace asynchronously).
func (n *childNS) close() { _ = n.cmd.Process.Kill(); _ = n.cmd.Wait() }

// newChildNS starts a process in a new network namespace and returns once
// it is there: the shell prints its line only after unshare switched.
func newChildNS(t *testing.T, name string) *childNS {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "sh", "-c", "echo ready; exec sleep infinity")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &childNS{name: name, pid: cmd.Process.Pid, cmd: cmd}
	t.Cleanup(n.close)
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("starting namespace %s: %q, %v", name, line, err)
	}
	n.run(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *childNS) args(args ...string) []string {
	return append([]string{"-t", strconv.Itoa(n.pid), "-n"}, args...)
}

func (n *childNS) run(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "nsenter", n.args(args...)...)
}

// curl fetches url from inside n, failing fast: an answer names the
// listener that gave it; a dropped SYN times out after a second.
func (n *childNS) curl(url string) (string, error) {
	out, err := exec.Command("nsenter", n.args("curl", "-sS", "--globoff", "--noproxy", "*",
		"--connect-timeout", "1", "-m", "3", url)...).CombinedOutput()
	return string(out), err
}

// topology builds, in the test's namespace (the host):
//
//	h6br0 (10.66.1.1, fd66:1::1)  configured bridge  <- h6c1 (container, .2)
//	h6br1 (10.66.2.1, fd66:2::1)  unconfigured       <- h6c2 (container, .2)
//	h6up0 (10.66.9.1, fd66:9::1)  the uplink veth    <- h6nb (neighbour, .2)
type topology struct{ c1, c2, nb *childNS }

// destroy removes the links (deleting a veth end deletes its peer at once)
// and then the namespaces, leaving the host as it was.
func (tp topology) destroy() {
	for _, l := range []string{"h6br0", "h6br1", "h6c1h", "h6c2h", "h6up0"} {
		_ = exec.Command("ip", "link", "del", l).Run()
	}
	for _, n := range []*childNS{tp.c1, tp.c2, tp.nb} {
		n.close()
	}
}

func newTopology(t *testing.T) topology {
	t.Helper()
	tp := topology{c1: newChildNS(t, "h6c1"), c2: newChildNS(t, "h6c2"), nb: newChildNS(t, "h6nb")}
	t.Cleanup(tp.destroy)
	peer := func(host, child string, ns *childNS, hostAddrs []string, childAddrs []string, bridge string) {
		run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", child)
		run(t, "ip", "link", "set", child, "netns", strconv.Itoa(ns.pid))
		if bridge != "" {
			run(t, "ip", "link", "set", host, "master", bridge)
		}
		for _, a := range hostAddrs {
			addAddr(t, nil, host, a)
		}
		run(t, "ip", "link", "set", host, "up")
		for _, a := range childAddrs {
			addAddr(t, ns, child, a)
		}
		ns.run(t, "ip", "link", "set", child, "up")
	}
	for i, br := range []string{"h6br0", "h6br1"} {
		run(t, "ip", "link", "add", br, "type", "bridge")
		addAddr(t, nil, br, fmt.Sprintf("10.66.%d.1/24", i+1))
		addAddr(t, nil, br, fmt.Sprintf("fd66:%d::1/64", i+1))
		run(t, "ip", "link", "set", br, "up")
	}
	for i, c := range []*childNS{tp.c1, tp.c2} {
		peer(fmt.Sprintf("h6c%dh", i+1), "eth0", c, nil,
			[]string{fmt.Sprintf("10.66.%d.2/24", i+1), fmt.Sprintf("fd66:%d::2/64", i+1)}, fmt.Sprintf("h6br%d", i))
		c.run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.66.%d.1", i+1))
		c.run(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd66:%d::1", i+1))
	}
	peer("h6up0", "eth0", tp.nb, []string{"10.66.9.1/24", "fd66:9::1/64"}, []string{"10.66.9.2/24", "fd66:9::2/64"}, "")
	return tp
}

// addAddr adds an address without duplicate address detection, so it is
// usable at once (in ns, or the host's namespace for nil).
func addAddr(t *testing.T, ns *childNS, link, cidr string) {
	t.Helper()
	args := []string{"ip", "addr", "add", cidr, "dev", link}
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	if ns == nil {
		run(t, args[0], args[1:]...)
		return
	}
	ns.run(t, args...)
}

// TestKernelContainersAndFence is issue 13's "must show" for the network:
// a container on a configured bridge is served at http://169.254.169.254/
// and http://[fd00:ec2::254]/; one on an unconfigured bridge is not; a
// neighbour on the uplink gets nothing at the endpoint or the listener's
// port over IPv4 or IPv6, even routing the addresses via the host or with a
// static neighbour entry, and cannot resolve 169.254.169.254 by ARP; after
// Teardown, and after a crash and Cleanup, the state (rules, addresses,
// links, sysctls) is what it was before. The bridges and containers appear
// after Setup, as when Docker starts after imds-shim.
func TestKernelContainersAndFence(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			before := hostState(t)
			// The listener is on the endpoint address itself (the daemon's
			// managed default), port 254: no sysctl is needed.
			cfg := Config{Link: LinkLo, Backend: be, Containers: []string{"h6br0", "h6notyet"},
				Target: netip.MustParseAddrPort("169.254.169.254:254")}
			r := newKernelRedirector(t, cfg, nil)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			ls := r.Listeners()
			if len(ls) != 2 {
				t.Fatalf("Listeners = %v, want the IPv4 and IPv6 targets", ls)
			}
			for _, l := range ls {
				listenOn(t, l.String())
			}
			tp := newTopology(t)
			want4 := "listener 169.254.169.254:254, path /latest/meta-data/"
			want6 := "listener [fd00:ec2::254]:254, path /latest/meta-data/"
			mustAnswer := func(ns *childNS, url, want string) {
				t.Helper()
				if got, err := ns.curl(url); err != nil || got != want {
					t.Errorf("%s: GET %s = %q, %v; want %q", ns.name, url, got, err, want)
				}
			}
			mustNotAnswer := func(ns *childNS, url string) {
				t.Helper()
				if got, err := ns.curl(url); err == nil {
					t.Errorf("%s: GET %s answered %q; want no answer", ns.name, url, got)
				}
			}
			// The host itself, through nat OUTPUT.
			if got, err := get("/latest/meta-data/"); err != nil || got != want4 {
				t.Errorf("host: GET = %q, %v", got, err)
			}
			if got, err := getURL("http://[fd00:ec2::254]/latest/meta-data/"); err != nil || got != want6 {
				t.Errorf("host: GET [fd00:ec2::254] = %q, %v", got, err)
			}
			// A container on the configured bridge, through nat PREROUTING.
			mustAnswer(tp.c1, "http://169.254.169.254/latest/meta-data/", want4)
			mustAnswer(tp.c1, "http://[fd00:ec2::254]/latest/meta-data/", want6)
			// A container on another bridge: nothing, not even the
			// listener's port directly.
			for _, url := range []string{"http://169.254.169.254/", "http://169.254.169.254:254/", "http://[fd00:ec2::254]/", "http://[fd00:ec2::254]:254/"} {
				mustNotAnswer(tp.c2, url)
			}
			// A neighbour routing the endpoint via the host.
			tp.nb.run(t, "ip", "route", "replace", "169.254.169.254/32", "via", "10.66.9.1")
			tp.nb.run(t, "ip", "-6", "route", "replace", "fd00:ec2::254/128", "via", "fd66:9::1")
			for _, url := range []string{"http://169.254.169.254/", "http://169.254.169.254:254/", "http://169.254.169.254:8254/",
				"http://[fd00:ec2::254]/", "http://[fd00:ec2::254]:254/"} {
				mustNotAnswer(tp.nb, url)
			}
			// On-link, by ARP: the host must not answer for the address.
			tp.nb.run(t, "ip", "route", "replace", "169.254.169.254/32", "dev", "eth0")
			tp.nb.run(t, "ip", "neigh", "flush", "dev", "eth0")
			mustNotAnswer(tp.nb, "http://169.254.169.254/")
			if n := tp.nb.run(t, "ip", "neigh", "show", "169.254.169.254", "dev", "eth0"); strings.Contains(n, "lladdr") {
				t.Errorf("neighbour resolved 169.254.169.254 by ARP: %q", n)
			} else {
				t.Logf("neighbour's entry for 169.254.169.254 after a connection attempt: %q", strings.TrimSpace(n))
			}
			// On-link over IPv6: neighbour discovery answers only for
			// addresses on the receiving link, so no entry resolves.
			tp.nb.run(t, "ip", "-6", "route", "replace", "fd00:ec2::254/128", "dev", "eth0")
			mustNotAnswer(tp.nb, "http://[fd00:ec2::254]/")
			if n := tp.nb.run(t, "ip", "-6", "neigh", "show", "fd00:ec2::254", "dev", "eth0"); strings.Contains(n, "lladdr") {
				t.Errorf("neighbour resolved fd00:ec2::254 by neighbour discovery: %q", n)
			}
			// With a static neighbour entry: the packets arrive, the fence
			// drops them.
			mac := hostMAC(t, "h6up0")
			tp.nb.run(t, "ip", "neigh", "replace", "169.254.169.254", "lladdr", mac, "dev", "eth0", "nud", "permanent")
			mustNotAnswer(tp.nb, "http://169.254.169.254/")
			mustNotAnswer(tp.nb, "http://169.254.169.254:254/")
			tp.nb.run(t, "ip", "-6", "neigh", "replace", "fd00:ec2::254", "lladdr", mac, "dev", "eth0", "nud", "permanent")
			mustNotAnswer(tp.nb, "http://[fd00:ec2::254]:254/")
			tp.nb.run(t, "ip", "neigh", "del", "169.254.169.254", "dev", "eth0")
			tp.nb.run(t, "ip", "route", "del", "169.254.169.254/32")
			tp.nb.run(t, "ip", "-6", "route", "del", "fd00:ec2::254/128")

			if st, err := r.Status(t.Context()); err != nil || !st.OK() {
				t.Errorf("Status (err %v):\n%s", err, st)
			}
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatal(err)
			}
			mustNotAnswer(tp.c1, "http://169.254.169.254/")
			tp.destroy()
			sameHost(t, "after Teardown", before)

			// A crash: everything left in place, then the next start's
			// Cleanup.
			if err := newKernelRedirector(t, cfg, nil).Setup(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := Cleanup(t.Context(), testLogger(t)); err != nil {
				t.Fatal(err)
			}
			sameHost(t, "after a crash and Cleanup", before)
		})
	}
}

// hostMAC reads a link's MAC through netlink (/sys/class/net shows the
// namespace sysfs was mounted in, not the test's).
func hostMAC(t *testing.T, link string) string {
	t.Helper()
	var links []ipLink
	if err := json.Unmarshal([]byte(run(t, "ip", "-j", "link", "show", "dev", link)), &links); err != nil || len(links) != 1 {
		t.Fatalf("reading the MAC of %s: %v", link, err)
	}
	return links[0].Address
}

// TestKernelIPv6Disabled: with net.ipv6.conf.all.disable_ipv6=1, "auto"
// sets up IPv4 only, without an error, and leaves nothing behind; "true"
// fails and changes nothing.
func TestKernelIPv6Disabled(t *testing.T) {
	nstest.RequireRootNetns(t)
	cleanHost(t)
	const key = "/proc/sys/net/ipv6/conf/all/disable_ipv6"
	old, err := os.ReadFile(key)
	if err != nil {
		t.Skipf("no IPv6 in this kernel: %v", err)
	}
	if err := os.WriteFile(key, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(key, old, 0o644) })
	target := listener(t)
	for _, be := range backends {
		t.Run(be, func(t *testing.T) {
			before := hostState(t)
			r := newKernelRedirector(t, Config{Link: LinkLo, Backend: be, Target: target}, nil)
			if err := r.Setup(t.Context()); err != nil {
				t.Fatalf("Setup with ipv6 auto on a host with IPv6 disabled: %v", err)
			}
			if r.IPv6Active() || len(r.Listeners()) != 1 {
				t.Errorf("IPv6Active %t, Listeners %v; want IPv4 only", r.IPv6Active(), r.Listeners())
			}
			mustGet(t, target, "/v4-only")
			st, err := r.Status(t.Context())
			if err != nil || !st.OK() || st.IPv6 {
				t.Errorf("Status (err %v):\n%s", err, st)
			}
			if err := r.Teardown(t.Context()); err != nil {
				t.Fatal(err)
			}
			sameHost(t, "after Teardown", before)

			err = newKernelRedirector(t, Config{Link: LinkLo, Backend: be, Target: target, IPv6: IPv6True}, nil).Setup(t.Context())
			if err == nil || !strings.Contains(err.Error(), "disable_ipv6") {
				t.Errorf("Setup with ipv6 true on a host with IPv6 disabled = %v, want an error naming disable_ipv6", err)
			}
			sameHost(t, "after a refused Setup", before)
			if err := Cleanup(context.Background(), testLogger(t)); err != nil {
				t.Errorf("Cleanup with IPv6 disabled: %v", err)
			}
		})
	}
}

package callers

// Tests against the real kernel: real client processes connect through a real
// nat OUTPUT DNAT (169.254.169.254:80 -> 127.0.0.1:PORT) to a local listener,
// and Identify must name them. They run only as root, inside the private
// network namespace that nstest.Main creates for this test binary; the test
// cgroups they create in the unified hierarchy carry a random name and are
// removed.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netEnv is the namespace's redirect: 169.254.169.254/32 and fd00:ec2::254/128
// on lo, DNAT of port 80 to listeners on 127.0.0.1:port and [::1]:port.
type netEnv struct {
	ln4, ln6 net.Listener
	port     int
	id       *Identifier
}

func setupNet(t testing.TB) *netEnv {
	t.Helper()
	nstest.RequireRootNetns(t)
	ln4, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln4.Addr().(*net.TCPAddr).Port
	ln6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	e := &netEnv{ln4: ln4, ln6: ln6, port: port, id: NewIdentifier()}
	dnat4 := []string{"-t", "nat", "OUTPUT", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("127.0.0.1:%d", port)}
	dnat6 := []string{"-t", "nat", "OUTPUT", "-d", "fd00:ec2::254/128", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("[::1]:%d", port)}
	run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo", "scope", "host")
	run(t, "ip", "-6", "addr", "add", "fd00:ec2::254/128", "dev", "lo", "nodad")
	run(t, "iptables", slices.Insert(slices.Clone(dnat4), 2, "-A")...)
	run(t, "ip6tables", slices.Insert(slices.Clone(dnat6), 2, "-A")...)
	t.Cleanup(func() {
		e.id.Close()
		ln4.Close()
		ln6.Close()
		run(t, "iptables", slices.Insert(slices.Clone(dnat4), 2, "-D")...)
		run(t, "ip6tables", slices.Insert(slices.Clone(dnat6), 2, "-D")...)
		run(t, "ip", "addr", "del", "169.254.169.254/32", "dev", "lo")
		run(t, "ip", "-6", "addr", "del", "fd00:ec2::254/128", "dev", "lo")
	})
	return e
}

// serve accepts one connection on ln, identifies it, answers it like an HTTP
// server and returns the caller. The caller's socket is open while Identify
// runs: the client waits for the answer.
func serveOne(t *testing.T, ln net.Listener, id *Identifier) <-chan Caller {
	t.Helper()
	ch := make(chan Caller, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		defer c.Close()
		caller := id.Identify(c)
		ch <- caller
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
	}()
	return ch
}

func curlCmd(url string) *exec.Cmd {
	return exec.Command("curl", "-sS", "-g", "--max-time", "10", "-o", "/dev/null", url)
}

func runClient(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client %v: %v: %s", cmd.Args, err, out)
	}
}

func wait(t *testing.T, ch <-chan Caller) Caller {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	return Caller{}
}

func TestIdentifyRoot(t *testing.T) {
	e := setupNet(t)
	if !e.id.Layout().Units() {
		t.Skip("no cgroup2 hierarchy on this host")
	}
	for _, tc := range []struct {
		name string
		ln   net.Listener
		url  string
	}{
		{"ipv4 dnat", e.ln4, "http://169.254.169.254/"},
		{"ipv6 dnat", e.ln6, "http://[fd00:ec2::254]/"},
		{"ipv4 direct", e.ln4, fmt.Sprintf("http://127.0.0.1:%d/", e.port)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := serveOne(t, tc.ln, e.id)
			runClient(t, curlCmd(tc.url))
			c := wait(t, ch)
			if c.Kind != Host || c.UID != 0 || c.User != "root" || !c.HasGID || c.GID != 0 || c.Group != "root" {
				t.Fatalf("caller = %+v, want host uid 0 (root:root)", c)
			}
			if want := selfCgroup(); c.Cgroup != want {
				t.Errorf("cgroup = %q, want the test's own %q", c.Cgroup, want)
			}
			if c.Inode == 0 || c.Cookie == 0 {
				t.Errorf("inode %d, cookie %d: want both set", c.Inode, c.Cookie)
			}
			if c.Key() != "uid:0" && !strings.HasPrefix(c.Key(), "uid:0 unit:") {
				t.Errorf("key %q", c.Key())
			}
		})
	}
}

func TestIdentifyNobody(t *testing.T) {
	e := setupNet(t)
	ch := serveOne(t, e.ln4, e.id)
	cmd := curlCmd("http://169.254.169.254/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	runClient(t, cmd)
	c := wait(t, ch)
	if c.Kind != Host || c.UID != 65534 || c.User != "nobody" || c.GID != 65534 {
		t.Fatalf("caller = %+v, want host uid 65534 nobody", c)
	}
	p, err := NewPolicy([]Entry{
		{Role: "admin", Users: []string{"root"}},
		{Role: "nobody", Users: []string{"nobody"}},
	}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Match(c); m.Role != "nobody" {
		t.Errorf("match = %+v, want the nobody entry", m)
	}
}

// makeCgroup creates dir (relative to the cgroup2 root) and returns an open
// fd for clone3's CLONE_INTO_CGROUP and its cgroup id.
func makeCgroup(t *testing.T, root, dir string) (int, uint64) {
	t.Helper()
	full := filepath.Join(root, dir)
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Innermost first; the client has been waited for, so the cgroup
		// is empty.
		for d := full; d != root && d != "/"; d = filepath.Dir(d) {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.EBUSY) {
				t.Errorf("removing test cgroup: %v", err)
			}
		}
	})
	fd, err := unix.Open(full, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return fd, st.Ino
}

func TestIdentifyCgroup(t *testing.T) {
	e := setupNet(t)
	root := e.id.Layout().Root
	if root == "" {
		t.Skip("no cgroup2 hierarchy on this host")
	}
	tag := fmt.Sprintf("imds-shim-h3test-%08x", rand.Uint32())
	p, err := NewPolicy([]Entry{
		{Role: "root", Users: []string{"0"}, Units: []string{"other.service"}},
	}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	// Each cgroup is created after the one before was resolved, so each is
	// a cache miss. Those outside units' subtrees are found by the shallow
	// walk alone; only the one inside a unit needs the deep walk.
	svc := tag + ".slice/" + tag + "-x.service"
	for _, tc := range []struct {
		dir, unit           string
		slices              []string
		shallowWks, deepWks int
	}{
		{dir: tag, shallowWks: 1},
		{dir: svc, unit: tag + "-x.service", slices: []string{tag + ".slice"}, shallowWks: 2},
		{dir: svc + "/sub", unit: tag + "-x.service", slices: []string{tag + ".slice"}, shallowWks: 3, deepWks: 1},
		{dir: tag + ".slice/" + tag + "-y.service", unit: tag + "-y.service", slices: []string{tag + ".slice"}, shallowWks: 4, deepWks: 1},
	} {
		fd, cgid := makeCgroup(t, root, tc.dir)
		ch := serveOne(t, e.ln4, e.id)
		cmd := curlCmd("http://169.254.169.254/")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd,
			Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		runClient(t, cmd)
		c := wait(t, ch)
		if c.Kind != Host || c.UID != 65534 || c.CgroupID != cgid || c.Cgroup != "/"+tc.dir ||
			c.Unit != tc.unit || !slices.Equal(c.Slices, tc.slices) {
			t.Fatalf("caller = %+v, want nobody in cgroup %d /%s unit %q slices %q", c, cgid, tc.dir, tc.unit, tc.slices)
		}
		if tc.unit != "" {
			q, err := NewPolicy([]Entry{
				{Role: "by-user", Users: []string{"root"}},
				{Role: "by-slice", Units: []string{tag + ".slice"}},
			}, Default{})
			if err != nil {
				t.Fatal(err)
			}
			if m := q.Match(c); m.Role != "by-slice" {
				t.Errorf("match = %+v, want the slice entry", m)
			}
			if want := "uid:65534 unit:" + tc.unit; c.Key() != want {
				t.Errorf("key %q, want %q", c.Key(), want)
			}
		}
		if m := p.Match(c); m.OK {
			t.Errorf("match = %+v, want no role", m)
		}
		r := e.id.cgroups
		if r.shallowWks != tc.shallowWks || r.deepWks != tc.deepWks {
			t.Errorf("%s: %d shallow and %d deep walks so far, want %d and %d", tc.dir, r.shallowWks, r.deepWks, tc.shallowWks, tc.deepWks)
		}
	}
}

// TestIdentifyClosed: a caller that closed before it was identified must not
// be taken for anyone, least of all for root: the kernel answers for a
// TIME_WAIT socket with a stub whose uid is 0.
func TestIdentifyClosed(t *testing.T) {
	e := setupNet(t)
	p, err := NewPolicy([]Entry{{Role: "root", Users: []string{"0", "root"}}}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		script string
		// timeWait: before identifying, the server closes its side too, so
		// the caller's orphaned socket moves to TIME_WAIT (the uid-0 stub).
		timeWait bool
	}{
		// The caller's socket lingers orphaned in FIN_WAIT: uid kept, inode 0.
		{name: "orphan", script: `exec 3<>/dev/tcp/169.254.169.254/80`},
		// SO_LINGER 0 resets the connection: the caller's socket is gone.
		{name: "reset", script: `exec python3 -c 'import socket,struct; s=socket.create_connection(("169.254.169.254",80)); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii",1,0)); s.close()'`},
		{name: "time_wait", script: `exec 3<>/dev/tcp/169.254.169.254/80`, timeWait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Run as nobody, so that an answer of uid 0 can only come from
			// the stub.
			cmd := exec.Command("bash", "-c", tc.script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			runClient(t, cmd) // it has exited, so its socket is closed
			conn, err := e.ln4.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if tc.timeWait {
				closeAndWait(t, conn.(*net.TCPConn))
				a, err := e.id.diag.lookup(unix.AF_INET, mustAddrPort(conn.RemoteAddr()), netip.MustParseAddrPort("169.254.169.254:80"))
				if err != nil || a.state != 6 || a.uid != 0 || a.inode != 0 || a.hasCgrp {
					t.Fatalf("kernel answered %+v, %v: want the TIME_WAIT stub (uid 0, inode 0, no cgroup)", a, err)
				}
			}
			c := e.id.Identify(conn)
			if c.Kind != Unidentified {
				t.Fatalf("caller = %+v, want unidentified", c)
			}
			if m := p.Match(c); m.OK {
				t.Errorf("match = %+v, want no role", m)
			}
			t.Logf("reason: %s", c.Reason)
		})
	}
}

// closeAndWait sends our FIN and waits until the caller has acknowledged it,
// which it does on entering TIME_WAIT.
func closeAndWait(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var state uint8
		raw.Control(func(fd uintptr) {
			if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = ti.State
			}
		})
		if state == 7 { // TCP_CLOSE: LAST_ACK got its ACK
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection still in TCP state %d", state)
		}
		runtime.Gosched()
	}
}

func mustAddrPort(a net.Addr) netip.AddrPort {
	ap, _ := addrPort(a)
	return ap
}

// TestIdentifyDualStack: an AF_INET6 socket connected to ::ffff:169.254.169.254
// (Java's sockets) travels as IPv4 through the IPv4 DNAT.
func TestIdentifyDualStack(t *testing.T) {
	e := setupNet(t)
	ch := serveOne(t, e.ln4, e.id)
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet6{Port: 80, Addr: netip.MustParseAddr("::ffff:169.254.169.254").As16()}
	if err := unix.Connect(fd, sa); err != nil {
		t.Fatal(err)
	}
	c := wait(t, ch)
	if c.Kind != Host || c.UID != 0 || c.Inode == 0 {
		t.Fatalf("caller = %+v, want host uid 0", c)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if uint64(c.Inode) != st.Ino {
		t.Errorf("inode %d, want the client socket's %d", c.Inode, st.Ino)
	}
	// Some kernels find such a socket only when asked as AF_INET6 with
	// ::ffff:-mapped addresses, which Identify falls back to; that query must
	// find it too.
	a, err := e.id.diag.lookup(unix.AF_INET6, c.Source, netip.MustParseAddrPort("169.254.169.254:80"))
	if err != nil || uint64(a.inode) != st.Ino || a.family != unix.AF_INET6 {
		t.Errorf("AF_INET6 mapped lookup: %+v, %v; want inode %d", a, err, st.Ino)
	}
}

// TestIdentifyOtherNetns: a "container" in another network namespace behind
// a veth pair reaches the listener through a PREROUTING DNAT; it is known by
// its source address only, and a host user's entry never matches it.
func TestIdentifyOtherNetns(t *testing.T) {
	e := setupNet(t)
	// The holder says "ready" from inside its new namespace, then keeps it.
	holder := exec.Command("unshare", "--net", "sh", "-c", "echo ready; exec sleep infinity")
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("namespace holder: %q, %v", line, err)
	}
	pid := strconv.Itoa(holder.Process.Pid)
	nsenter := func(args ...string) []string {
		return append([]string{"--net=/proc/" + pid + "/ns/net"}, args...)
	}
	run(t, "ip", "link", "add", "h3v0", "type", "veth", "peer", "name", "h3v1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "h3v0").Run() })
	run(t, "ip", "link", "set", "h3v1", "netns", pid)
	run(t, "ip", "addr", "add", "10.213.0.1/24", "dev", "h3v0")
	run(t, "ip", "link", "set", "h3v0", "up")
	run(t, "nsenter", nsenter("ip", "link", "set", "lo", "up")...)
	run(t, "nsenter", nsenter("ip", "addr", "add", "10.213.0.2/24", "dev", "h3v1")...)
	run(t, "nsenter", nsenter("ip", "link", "set", "h3v1", "up")...)
	run(t, "nsenter", nsenter("ip", "route", "add", "default", "via", "10.213.0.1")...)
	pre := []string{"-t", "nat", "PREROUTING", "-i", "h3v0", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("169.254.169.254:%d", e.port)}
	run(t, "iptables", slices.Insert(slices.Clone(pre), 2, "-A")...)
	t.Cleanup(func() { run(t, "iptables", slices.Insert(slices.Clone(pre), 2, "-D")...) })

	ch := serveOne(t, e.ln4, e.id)
	runClient(t, exec.Command("nsenter", nsenter("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "http://169.254.169.254/")...))
	c := wait(t, ch)
	if c.Kind != Source || c.Source.Addr() != netip.MustParseAddr("10.213.0.2") || c.UID != 0 || c.User != "" {
		t.Fatalf("caller = %+v, want source 10.213.0.2 only", c)
	}
	if c.Key() != "src:10.213.0.2" {
		t.Errorf("key %q", c.Key())
	}
	p, err := NewPolicy([]Entry{
		{Role: "root", Users: []string{"0", "root"}, Groups: []string{"0"}},
		{Role: "ci", Sources: []netip.Prefix{netip.MustParsePrefix("10.213.0.0/24")}},
	}, Default{Role: "host"})
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Match(c); m.Role != "ci" {
		t.Errorf("match = %+v, want ci", m)
	}
}

// TestIdentifyConcurrent: listeners identify at the same time; each request
// must get its own answer.
func TestIdentifyConcurrent(t *testing.T) {
	e := setupNet(t)
	client, err := net.Dial("tcp4", "169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := e.ln4.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := e.id.Identify(conn)
	if want.Kind != Host {
		t.Fatalf("caller = %+v", want)
	}
	errs := make(chan string, 8)
	for range 8 {
		go func() {
			for range 200 {
				if c := e.id.Identify(conn); c.Kind != Host || c.Cookie != want.Cookie || c.Inode != want.Inode {
					errs <- c.String()
					return
				}
			}
			errs <- ""
		}()
	}
	for range 8 {
		if s := <-errs; s != "" {
			t.Errorf("concurrent Identify gave %s, want %s", s, want)
		}
	}
}

func TestSelfTestAndContext(t *testing.T) {
	nstest.RequireRootNetns(t)
	id := NewIdentifier()
	defer id.Close()
	c, err := id.SelfTest()
	if err != nil {
		t.Fatalf("SelfTest: %v (caller %v)", err, c)
	}
	if c.UID != 0 || c.Cgroup != selfCgroup() {
		t.Errorf("SelfTest saw %v", c)
	}
	ctx := id.ConnContext(t.Context(), fakeConn{})
	if got, ok := FromContext(ctx); !ok || got.Kind != Unidentified || got.Reason != "not a TCP connection" {
		t.Errorf("FromContext = %+v, %v", got, ok)
	}
	if got, ok := FromContext(t.Context()); ok || got.Kind != Unidentified {
		t.Errorf("FromContext of a bare context = %+v, %v", got, ok)
	}
}

// fakeConn is a connection that is not TCP (a unix socket would be one).
type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.UnixAddr{Name: "@x", Net: "unix"} }

// TestIdentifyDualStackListener: a listener on [::] accepts the IPv4 DNAT's
// connections as ::ffff:-mapped; the original destination is read with the
// IPv4 option on its AF_INET6 socket.
func TestIdentifyDualStackListener(t *testing.T) {
	e := setupNet(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", e.port+1))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rule := []string{"-t", "nat", "OUTPUT", "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "81",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("127.0.0.1:%d", e.port+1)}
	run(t, "iptables", slices.Insert(slices.Clone(rule), 2, "-A")...)
	defer run(t, "iptables", slices.Insert(slices.Clone(rule), 2, "-D")...)
	ch := serveOne(t, ln, e.id)
	runClient(t, curlCmd("http://169.254.169.254:81/"))
	c := wait(t, ch)
	if c.Kind != Host || c.UID != 0 || c.Source.Addr() != netip.MustParseAddr("169.254.169.254") {
		t.Fatalf("caller = %+v, want host uid 0 from 169.254.169.254", c)
	}
}

// TestIdentifyNATPortClash: a connection made straight to the listener and
// one made through the DNAT from the same source address and port would have
// the same reply tuple, so netfilter gives the second one another source port
// (implicit source-port remapping). The daemon's own probe of its listener
// makes such connections. The listener then sees a port that the caller's
// socket does not have; the caller must still be found, as itself.
func TestIdentifyNATPortClash(t *testing.T) {
	e := setupNet(t)
	reuse := func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		return serr
	}
	// A first connection through the DNAT shows which source address
	// callers of 169.254.169.254 get.
	first, err := net.Dial("tcp4", "169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	src := mustAddrPort(first.LocalAddr()).Addr()
	first.Close()
	if c, err := e.ln4.Accept(); err == nil {
		c.Close()
	}
	var local *net.TCPAddr
	var direct net.Conn
	for try := 0; direct == nil; try++ {
		// Straight to the DNAT's target, from local.
		local = &net.TCPAddr{IP: src.AsSlice(), Port: 40000 + rand.IntN(20000)}
		direct, err = (&net.Dialer{LocalAddr: local, Control: reuse}).Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", e.port))
		if err != nil && try == 10 {
			t.Fatal(err)
		}
	}
	defer direct.Close()
	srvDirect, err := e.ln4.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srvDirect.Close()

	// Through the DNAT, from the same address and port.
	nat, err := (&net.Dialer{LocalAddr: local, Control: reuse}).Dial("tcp4", "169.254.169.254:80")
	if err != nil {
		t.Fatal(err)
	}
	defer nat.Close()
	conn, err := e.ln4.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen := mustAddrPort(conn.RemoteAddr())
	if seen.Port() == uint16(local.Port) {
		t.Fatalf("the listener saw the caller's own port %d: no clash, the test proves nothing", local.Port)
	}
	t.Logf("the caller's port %d reached the listener as %d", local.Port, seen.Port())
	c := e.id.Identify(conn)
	if c.Kind != Host || c.UID != 0 || c.Inode == 0 {
		t.Fatalf("caller = %+v, want host uid 0", c)
	}
	if want := mustAddrPort(nat.LocalAddr()); c.Source != want {
		t.Errorf("source = %s, want the caller's own address %s", c.Source, want)
	}
	if k, want := c.Key(), e.id.Identify(srvDirect).Key(); k != want {
		t.Errorf("key %q, want %q as for its other connection", k, want)
	}
}

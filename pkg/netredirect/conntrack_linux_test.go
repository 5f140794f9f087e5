package netredirect

import (
	"errors"
	"net"
	"net/netip"
	osexec "os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
)

// TestKernelForgetClosedFlows: a redirected connection that the server
// resets leaves a conntrack entry in state CLOSE. When the redirect moves
// to a new listener and the old one closes, a client reusing that source
// port is refused by the closed port until the entry is forgotten; after
// ForgetClosedFlows it reaches the new listener.
func TestKernelForgetClosedFlows(t *testing.T) {
	nstest.RequireRootNetns(t)
	run(t, "ip", "link", "set", "lo", "up")
	run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
	t.Cleanup(func() { tryRun(t, "ip", "addr", "del", "169.254.169.254/32", "dev", "lo") })
	ep := netip.MustParseAddr("169.254.169.254")
	listen := func(port uint16) net.Listener {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(ep, port).String())
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	oldLn, newLn := listen(9001), listen(9002)
	defer newLn.Close()
	dnat := func(op string, port string) {
		args := []string{"-t", "nat", op, "OUTPUT"}
		if op == "-R" {
			args = append(args, "1")
		}
		run(t, "iptables", append(args, "-d", "169.254.169.254/32", "-p", "tcp", "--dport", "80",
			"-j", "DNAT", "--to-destination", "169.254.169.254:"+port)...)
	}
	dnat("-A", "9001")
	t.Cleanup(func() { tryRun(t, "iptables", "-t", "nat", "-F", "OUTPUT") })

	const clientPort = 45678
	dial := func() (net.Conn, error) {
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{IP: ep.AsSlice(), Port: clientPort},
			Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
				return errors.Join(err, serr)
			},
		}
		return d.Dial("tcp4", "169.254.169.254:80")
	}
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	s, err := oldLn.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.(*net.TCPConn).SetLinger(0) // the server resets the connection
	s.Close()
	buf := make([]byte, 1)
	c.Read(buf) // until the reset arrives
	c.Close()

	// The redirect moves, and the old listener closes, as on a reload
	// that changes imds.listen.
	dnat("-R", "9002")
	oldLn.Close()
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("the stale conntrack entry did not send the client to the closed port; the test proves nothing here")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("reconnecting before ForgetClosedFlows: %v, want connection refused", err)
	}
	n, err := ForgetClosedFlows(netip.AddrPortFrom(ep, 9001))
	if err != nil || n == 0 {
		t.Fatalf("ForgetClosedFlows removed %d entries, err %v; want at least one", n, err)
	}
	c, err = dial()
	if err != nil {
		t.Fatalf("after ForgetClosedFlows the client is still not redirected to the new listener: %v", err)
	}
	defer c.Close()
	if s, err := newLn.Accept(); err != nil {
		t.Fatal(err)
	} else {
		s.Close()
	}
	// Live flows to other listeners are never touched.
	if n, err := ForgetClosedFlows(netip.AddrPortFrom(ep, 9002)); err != nil || n != 0 {
		t.Errorf("ForgetClosedFlows on the live listener removed %d entries (err %v), want 0", n, err)
	}
}

// tryRun runs a cleanup command, reporting but not failing on errors.
func tryRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := osexec.Command(name, args...).CombinedOutput(); err != nil {
		t.Logf("%s %v: %v: %s", name, args, err, out)
	}
}

package imds

import (
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// acceptedHops dials ln and returns IP_TTL and, for IPv6 sockets,
// IPV6_UNICAST_HOPS as read back from the accepted socket.
func acceptedHops(t *testing.T, ln net.Listener) (ttl, hops int) {
	t.Helper()
	c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer a.Close()
	rc, err := a.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	hops = -1
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		ttl, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL)
		if d, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); d == unix.AF_INET6 && gerr == nil {
			hops, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt: %v", gerr)
	}
	return ttl, hops
}

func TestListenHopLimit(t *testing.T) {
	for _, hop := range []int{1, 2, 64} {
		ln, err := Listen("tcp4", "127.0.0.1:0", hop)
		if err != nil {
			t.Fatal(err)
		}
		ttl, _ := acceptedHops(t, ln)
		ln.Close()
		if ttl != hop {
			t.Errorf("hop limit %d: accepted socket IP_TTL = %d", hop, ttl)
		}
	}
	ln6, err := Listen("tcp6", "[::1]:0", 3)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln6.Close()
	if _, hops := acceptedHops(t, ln6); hops != 3 {
		t.Errorf("IPv6 accepted socket IPV6_UNICAST_HOPS = %d, want 3", hops)
	}
	// The daemon binds the IPv6 endpoint with network "tcp" (a socket
	// that is not v6-only), and changes its limit in place on reload.
	ln, err := Listen("tcp", "[::1]:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, hops := acceptedHops(t, ln); hops != 2 {
		t.Errorf("IPv6 listener from \"tcp\": IPV6_UNICAST_HOPS = %d, want 2", hops)
	}
	if err := ln.SetHopLimit(5); err != nil {
		t.Fatal(err)
	}
	if _, hops := acceptedHops(t, ln); hops != 5 {
		t.Errorf("IPv6 listener after SetHopLimit(5): IPV6_UNICAST_HOPS = %d", hops)
	}
}

// The accepted socket gets the limit even if the listener's was changed
// after Listen, so it does not rest on inheritance alone.
func TestListenSetsEachConn(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0", 5)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.Listener.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 64) })
	if ttl, _ := acceptedHops(t, ln); ttl != 5 {
		t.Errorf("accepted socket IP_TTL = %d, want 5", ttl)
	}
}

func TestListenErrors(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		hop           int
		want          string
	}{
		{"tcp", "127.0.0.1:0", 0, "hop limit 0"},
		{"tcp", "127.0.0.1:0", 65, "hop limit 65"},
		{"unix", "/tmp/x.sock", 1, `network "unix"`},
		{"tcp", "256.0.0.1:0", 1, "listening on 256.0.0.1:0"},
	} {
		ln, err := Listen(tc.network, tc.addr, tc.hop)
		if err == nil {
			ln.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Listen(%q, %q, %d) = %v, want error with %q", tc.network, tc.addr, tc.hop, err, tc.want)
		}
	}
}

// A hop limit changed on a live listener applies to the next accepted
// connection and to the listening socket, which stays the same socket.
func TestListenSetHopLimit(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for _, hop := range []int{7, 1, 64} {
		if err := ln.SetHopLimit(hop); err != nil {
			t.Fatal(err)
		}
		if ttl, _ := acceptedHops(t, ln); ttl != hop {
			t.Errorf("after SetHopLimit(%d): accepted IP_TTL = %d", hop, ttl)
		}
		if got := sockoptInt(t, ln.Listener, unix.IPPROTO_IP, unix.IP_TTL); got != hop {
			t.Errorf("after SetHopLimit(%d): listening socket IP_TTL = %d", hop, got)
		}
	}
	for _, bad := range []int{0, 65} {
		if err := ln.SetHopLimit(bad); err == nil {
			t.Errorf("SetHopLimit(%d) accepted", bad)
		}
	}
	if ln.HopLimit() != 64 || ln.Addr().String() != addr {
		t.Errorf("after refused changes: hop %d on %s, want 64 on %s", ln.HopLimit(), ln.Addr(), addr)
	}
}

// Go listens with Multipath TCP first (GODEBUG multipathtcp, on by default
// for listeners since Go 1.24). Where the kernel refuses IP_TTL on an
// MPTCP socket, Listen's error makes Go fall back to plain TCP; either
// way the listener it returns must hand out connections with the limit.
func TestListenMPTCPFallback(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	proto := sockoptInt(t, ln.Listener, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	mptcpTTL := mptcpAcceptsTTL(t)
	t.Logf("listening socket protocol %d; kernel sets IP_TTL on MPTCP sockets: %v", proto, mptcpTTL)
	if proto == unix.IPPROTO_MPTCP && !mptcpTTL {
		t.Errorf("listener is MPTCP although the kernel refuses IP_TTL on MPTCP sockets")
	}
	if !mptcpTTL && proto != unix.IPPROTO_TCP {
		t.Errorf("listening socket protocol %d, want TCP (%d) after the fallback", proto, unix.IPPROTO_TCP)
	}
	if ttl, _ := acceptedHops(t, ln); ttl != 3 {
		t.Errorf("accepted IP_TTL = %d, want 3", ttl)
	}
}

// mptcpAcceptsTTL reports whether this kernel sets IP_TTL on an MPTCP
// socket; false also when it has no MPTCP.
func mptcpAcceptsTTL(t *testing.T) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, 3) == nil
}

func sockoptInt(t *testing.T, c any, level, opt int) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

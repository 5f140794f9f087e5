package callers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identifier identifies the callers of accepted TCP connections. It holds the
// netlink sockets and the caches that make that cheap; one Identifier serves
// every listener of a daemon, concurrently. The zero value is not usable: use
// NewIdentifier.
type Identifier struct {
	layout  Layout
	diag    *nlPool
	route   *nlPool
	ct      *nlPool
	cgroups *cgroupResolver
	users   *userDB
}

// NewIdentifier returns an Identifier for this host's cgroup layout. It opens
// nothing yet: netlink sockets are opened on first use and kept.
func NewIdentifier() *Identifier {
	return newIdentifier(DetectLayout())
}

func newIdentifier(l Layout) *Identifier {
	id := &Identifier{
		layout: l,
		diag:   &nlPool{proto: unix.NETLINK_SOCK_DIAG},
		route:  &nlPool{proto: unix.NETLINK_ROUTE},
		ct:     &nlPool{proto: unix.NETLINK_NETFILTER},
		users:  newUserDB(),
	}
	if l.Root != "" {
		id.cgroups = &cgroupResolver{root: l.Root}
	}
	return id
}

// Layout is the cgroup layout the Identifier found.
func (id *Identifier) Layout() Layout { return id.layout }

// Close releases the netlink sockets.
func (id *Identifier) Close() error {
	id.diag.close()
	id.route.close()
	id.ct.close()
	return nil
}

// Identify says who is at the other end of c, an accepted TCP connection, by
// asking the kernel about the caller's own socket:
//
//  1. The caller's original destination (getsockopt SO_ORIGINAL_DST, or
//     IP6T_SO_ORIGINAL_DST for IPv6), since after the DNAT the caller's
//     socket is connected to 169.254.169.254:80, not to our listener. A
//     connection made to the listener directly has no NAT record and uses
//     the listener's address.
//  2. One exact sock_diag request for the socket whose address is c's remote
//     address and whose peer is that original destination: its uid, inode,
//     cookie and cgroup id. A v6 socket connected to a v4 address (Java's
//     dual-stack sockets) is asked for again as ::ffff:-mapped AF_INET6.
//  3. The cgroup id is resolved to a path, and the path to a systemd unit.
//
// When no socket of this host has c's remote address but the peer is local,
// netfilter may have given the connection another source port than the
// caller's socket has (it does when a connection through the DNAT would
// share its reply tuple with one made straight to the listener, such as the
// daemon's own probe, from the same address and port). Conntrack then
// still records the caller's own address: it is asked for the connection's
// original tuple, and the socket is looked up under that.
//
// The kernel answers for a caller that has already closed with a stub that
// carries uid 0: a socket with inode 0, one without the cgroup attribute, and
// one not found at all are never taken for a host caller. A caller whose
// socket is not found and whose address is not one of this host's (a
// container on a bridge, in another network namespace) is a Source caller,
// known only by its address. Errors make the caller Unidentified, with the
// reason; nothing here fails open.
func (id *Identifier) Identify(c net.Conn) Caller {
	remote, ok := addrPort(c.RemoteAddr())
	if !ok {
		return Caller{Reason: "not a TCP connection"}
	}
	caller := Caller{Source: remote}
	local, _ := addrPort(c.LocalAddr())
	sc, ok := c.(syscall.Conn)
	if !ok {
		caller.Reason = "connection has no socket"
		return caller
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		caller.Reason = "connection has no socket: " + err.Error()
		return caller
	}
	var dst netip.AddrPort
	var derr error
	if err := raw.Control(func(fd uintptr) { dst, derr = originalDst(int(fd), remote.Addr().Is4()) }); err != nil {
		derr = err
	}
	switch {
	case derr == nil:
	case errors.Is(derr, unix.ENOENT) && local.IsValid():
		dst = local // not NATed: the caller connected to the listener itself
	default:
		caller.Reason = "reading the original destination: " + derr.Error()
		return caller
	}
	return id.identifyAt(local, remote, dst)
}

// identify is Identify after the original destination is known, for a
// connection whose listener address is not known (so conntrack is not
// asked).
func (id *Identifier) identify(remote, dst netip.AddrPort) Caller {
	return id.identifyAt(netip.AddrPort{}, remote, dst)
}

// find looks up the caller's socket: the one whose address is remote and
// whose peer is dst.
func (id *Identifier) find(remote, dst netip.AddrPort) (diagAnswer, error) {
	family := uint8(unix.AF_INET6)
	if remote.Addr().Is4() {
		family = unix.AF_INET
	}
	a, err := id.diag.lookup(family, remote, dst)
	if errors.Is(err, errNotFound) && family == unix.AF_INET {
		// A dual-stack AF_INET6 socket connected to a v4 address. Asked
		// before deciding the caller is in another namespace, even though
		// that costs containers a round trip: a host user may bind
		// (IP_FREEBIND needs no privilege) a container's address, and
		// must then be found as the host user it is, not taken for that
		// container.
		a, err = id.diag.lookup(unix.AF_INET6, remote, dst)
	}
	return a, err
}

// identifyAt identifies the caller at remote of a connection to dst that
// the listener accepted at listener ("" when unknown).
func (id *Identifier) identifyAt(listener, remote, dst netip.AddrPort) Caller {
	caller := Caller{Source: remote}
	a, err := id.find(remote, dst)
	switch {
	case errors.Is(err, errNotFound):
		local, lerr := id.route.isLocal(remote.Addr())
		switch {
		case lerr != nil:
			caller.Reason = "deciding whether the peer is local: " + lerr.Error()
			return caller
		case !local:
			caller.Kind = Source
			return caller
		}
		// A local peer whose socket is not at remote: either it has
		// closed, or netfilter remapped its source port.
		src, odst, ok, reason := id.remapped(listener, remote)
		if !ok {
			caller.Reason = reason
			return caller
		}
		if a, err = id.find(src, odst); err != nil {
			caller.Reason = "caller's socket not found (closed)"
			if !errors.Is(err, errNotFound) {
				caller.Reason = "asking the kernel about the caller's socket: " + err.Error()
			}
			return caller
		}
		caller.Source = src
	case err != nil:
		caller.Reason = "asking the kernel about the caller's socket: " + err.Error()
		return caller
	}
	caller.Inode, caller.Cookie = a.inode, a.cookie
	if a.inode == 0 {
		// An orphaned or TIME_WAIT socket: its process has closed it (the
		// kernel reports uid 0 for a TIME_WAIT stub).
		caller.Reason = "caller's socket closed"
		return caller
	}
	if !a.hasCgrp {
		caller.Reason = "kernel reported no cgroup for the caller's socket"
		return caller
	}
	caller.UID, caller.CgroupID = a.uid, a.cgroupID
	if id.cgroups != nil {
		p, err := id.cgroups.path(a.cgroupID)
		if err != nil {
			// A unit entry could not be told from a user entry, and the
			// first-match order could then give a service another entry's
			// role: fail closed.
			caller.Reason = fmt.Sprintf("resolving cgroup id %d: %v", a.cgroupID, err)
			return caller
		}
		caller.Cgroup = p
		caller.Unit, caller.Slices = UnitOf(p)
	}
	ui := id.users.lookup(a.uid)
	caller.User, caller.GID, caller.HasGID, caller.Group = ui.name, ui.gid, ui.hasGID, ui.group
	caller.Kind = Host
	return caller
}

// remapped asks conntrack for the original tuple of the connection the
// listener's socket at listener has with remote. ok is true when netfilter
// changed the caller's source port: src is then the caller's own address,
// dst the one it connected to. Otherwise reason says why the caller stays
// unidentified.
func (id *Identifier) remapped(listener, remote netip.AddrPort) (src, dst netip.AddrPort, ok bool, reason string) {
	const closed = "caller's socket not found (closed)"
	if !listener.IsValid() {
		return src, dst, false, closed
	}
	src, dst, err := id.ct.conntrackOrigin(listener, remote)
	switch {
	case errors.Is(err, errNotFound):
		return src, dst, false, closed // not NATed: the caller has closed
	case err != nil:
		return src, dst, false, closed + "; asking conntrack for its source: " + err.Error()
	case src.Addr().Unmap() != remote.Addr().Unmap() || src.Port() == remote.Port():
		// The source address never changes on the OUTPUT path; only a
		// different port says the socket may be elsewhere.
		return src, dst, false, closed
	}
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), true, ""
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok || t == nil {
		return netip.AddrPort{}, false
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// ip6tSoOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h
// (golang.org/x/sys/unix has only the IPv4 SO_ORIGINAL_DST; both are 80).
const ip6tSoOriginalDst = 80

// originalDst reads the destination the caller's packets had before the DNAT
// (SO_ORIGINAL_DST) from the accepted socket fd. v4 says whether the
// connection is IPv4 (possibly on a dual-stack listener).
func originalDst(fd int, v4 bool) (netip.AddrPort, error) {
	if v4 {
		// struct sockaddr_in: family, port (big endian), address.
		// GetsockoptIPv6Mreq reads 20 bytes, enough for its 16.
		m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			return netip.AddrPort{}, err
		}
		b := m.Multiaddr[:]
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
	}
	// struct sockaddr_in6 (28 bytes); IPv6MTUInfo is 32.
	mi, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSoOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	// The port is in network byte order in memory; Port read it natively.
	var pb [2]byte
	binary.NativeEndian.PutUint16(pb[:], mi.Addr.Port)
	port := binary.BigEndian.Uint16(pb[:])
	return netip.AddrPortFrom(netip.AddrFrom16(mi.Addr.Addr).Unmap(), port), nil
}

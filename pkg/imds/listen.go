package imds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen listens on a TCP address and sets the IP TTL (IPv4) and unicast
// hop limit (IPv6) of every accepted connection to the listener's hop limit
// (1..64), as EC2 does with its PUT response hop limit: a reply leaves with
// that many hops to live, and each router on the way back takes one. With
// 1, a client a routed hop away (behind NAT on another host, a nested
// network namespace that routes through another) connects but never
// receives an answer.
//
// It does not keep containers on this host out: a container on a bridge
// receives the host's replies directly, with no forwarding hop in between,
// so TTL 1 reaches it (measured). Who may connect at all is decided by the
// redirect's rules (netredirect: only this host's processes and the bridges
// in network.containers) and by imds.allowed_cidrs.
//
// The limit is read on every Accept, so SetHopLimit changes it for the
// next connection without closing the socket: a reload never opens a
// window in which the port is free for another process to bind.
//
// The limit is set on the listening socket too, which Linux copies into
// accepted sockets and uses for the SYN-ACK; each accepted connection is
// then set again so the limit does not depend on that inheritance. A
// connection whose limit cannot be set is closed and never handed out.
//
// Go listens with Multipath TCP first where the kernel offers it; setting
// the limit on the listening socket fails there (EOPNOTSUPP on kernels
// without IP_TTL for MPTCP), and Go then falls back to plain TCP, whose
// accepted sockets take the limit.
func Listen(network, addr string, hopLimit int) (*Listener, error) {
	if err := checkHopLimit(hopLimit); err != nil {
		return nil, err
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("network %q is not tcp, tcp4 or tcp6", network)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return setHopLimit(c, hopLimit)
	}}
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	l := &Listener{Listener: ln}
	l.hop.Store(int32(hopLimit))
	return l, nil
}

func checkHopLimit(n int) error {
	if n < 1 || n > 64 {
		return fmt.Errorf("hop limit %d is outside 1..64", n)
	}
	return nil
}

// Listener is a TCP listener whose accepted connections carry its hop
// limit. Accept returns the accepted *net.TCPConn itself.
type Listener struct {
	net.Listener
	hop atomic.Int32
}

// HopLimit is the limit the next accepted connection gets.
func (l *Listener) HopLimit() int { return int(l.hop.Load()) }

// SetHopLimit changes the limit for connections accepted from now on, and
// on the listening socket (the SYN-ACK). Connections already accepted keep
// theirs. On error nothing changes.
func (l *Listener) SetHopLimit(n int) error {
	if err := checkHopLimit(n); err != nil {
		return err
	}
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return errors.New("listener has no socket")
	}
	rc, err := sc.SyscallConn()
	if err == nil {
		err = setHopLimit(rc, n)
	}
	if err != nil {
		return fmt.Errorf("setting the hop limit on %s: %w", l.Addr(), err)
	}
	l.hop.Store(int32(n))
	return nil
}

// Accept returns the next connection with its hop limit set. Failing to
// set it drops that connection rather than returning an error, because
// http.Server stops serving on a non-temporary Accept error.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			c.Close()
			continue
		}
		rc, err := sc.SyscallConn()
		if err == nil {
			err = setHopLimit(rc, l.HopLimit())
		}
		if err != nil {
			c.Close()
			continue
		}
		return c, nil
	}
}

// setHopLimit sets IP_TTL on IPv4 sockets and IPV6_UNICAST_HOPS on IPv6
// sockets; a dual-stack IPv6 socket also gets IP_TTL, which Linux applies
// to its IPv4-mapped traffic.
func setHopLimit(c syscall.RawConn, n int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		domain, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = fmt.Errorf("reading socket domain: %w", err)
			return
		}
		switch domain {
		case unix.AF_INET:
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, n); err != nil {
				serr = fmt.Errorf("setting IP_TTL: %w", err)
			}
		case unix.AF_INET6:
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, n); err != nil {
				serr = fmt.Errorf("setting IPV6_UNICAST_HOPS: %w", err)
				return
			}
			v6only, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
			if err == nil && v6only == 0 {
				if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, n); err != nil {
					serr = fmt.Errorf("setting IP_TTL on dual-stack socket: %w", err)
				}
			}
		default:
			serr = fmt.Errorf("socket domain %d is not IPv4 or IPv6", domain)
		}
	})
	if err != nil {
		return fmt.Errorf("controlling socket: %w", err)
	}
	return serr
}

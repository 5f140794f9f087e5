package imds

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen listens on a TCP address and sets the IP TTL (IPv4) and unicast
// hop limit (IPv6) of every accepted connection to hopLimit (1..64), so that
// responses cannot travel further than EC2's PUT response hop limit allows:
// with 1, a client behind one more hop (a container bridge, a routed peer)
// connects but never receives an answer.
//
// The limit is set on the listening socket too, which Linux copies into
// accepted sockets and uses for the SYN-ACK; each accepted connection is
// then set again so the limit does not depend on that inheritance. A
// connection whose limit cannot be set is closed and never handed out.
func Listen(network, addr string, hopLimit int) (net.Listener, error) {
	if hopLimit < 1 || hopLimit > 64 {
		return nil, fmt.Errorf("hop limit %d is outside 1..64", hopLimit)
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
	return &hopListener{Listener: ln, hopLimit: hopLimit}, nil
}

type hopListener struct {
	net.Listener
	hopLimit int
}

// Accept returns the next connection with its hop limit set. Failing to
// set it drops that connection rather than returning an error, because
// http.Server stops serving on a non-temporary Accept error.
func (l *hopListener) Accept() (net.Conn, error) {
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
			err = setHopLimit(rc, l.hopLimit)
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

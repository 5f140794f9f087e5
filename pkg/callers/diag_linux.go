package callers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Netlink constants that golang.org/x/sys/unix does not define, from
// include/uapi/linux/inet_diag.h.
const (
	inetDiagCgroupID = 21 // INET_DIAG_CGROUP_ID: u64, every full socket since Linux 5.7

	sizeofInetDiagReqV2 = 56 // struct inet_diag_req_v2
	sizeofInetDiagMsg   = 72 // struct inet_diag_msg

	// allStates asks about a socket in any TCP state; the exact lookup
	// ignores it today, but a future kernel filtering on it must not hide
	// the stub of a closed caller, which has to be seen to be refused.
	allStates = 0xffffffff
)

// diagAnswer is what the kernel reports about one socket.
type diagAnswer struct {
	family   uint8
	state    uint8
	uid      uint32
	inode    uint32
	cookie   uint64
	cgroupID uint64
	hasCgrp  bool
}

// errNotFound is the kernel's ENOENT: no socket in this network namespace has
// that address pair.
var errNotFound = errors.New("no such socket")

// nlPool holds idle netlink sockets of one protocol. The kernel answers a
// sock_diag or route request synchronously, inside sendto, so a request is
// one sendto and one recvfrom on a socket nobody else uses meanwhile; several
// listeners (IPv4, IPv6) identify at the same time, so each request takes a
// free socket from the pool, or opens one.
type nlPool struct {
	proto int
	mu    sync.Mutex
	free  []*nlSock
	seq   atomic.Uint32
}

type nlSock struct {
	fd  int
	buf []byte
}

func (d *nlPool) get() (*nlSock, error) {
	d.mu.Lock()
	if n := len(d.free); n > 0 {
		s := d.free[n-1]
		d.free = d.free[:n-1]
		d.mu.Unlock()
		return s, nil
	}
	d.mu.Unlock()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, d.proto)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	// The kernel answers before sendto returns, so a receive never waits
	// for it; the timeout only bounds a kernel that does not answer at all.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setting the netlink receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the netlink socket: %w", err)
	}
	return &nlSock{fd: fd, buf: make([]byte, 8192)}, nil
}

// maxIdleSockets bounds the sockets kept between requests: one per listener
// that identifies at the same time is plenty.
const maxIdleSockets = 4

func (d *nlPool) put(s *nlSock, broken bool) {
	d.mu.Lock()
	if broken || len(d.free) >= maxIdleSockets {
		d.mu.Unlock()
		unix.Close(s.fd)
		return
	}
	d.free = append(d.free, s)
	d.mu.Unlock()
}

func (d *nlPool) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.free {
		unix.Close(s.fd)
	}
	d.free = nil
}

// lookup asks the kernel about the TCP socket whose local address is src and
// whose peer is dst, with one exact SOCK_DIAG_BY_FAMILY request (no
// NLM_F_DUMP: the kernel looks the socket up in its hash table instead of
// walking every socket). family is AF_INET or AF_INET6; for AF_INET6 both
// addresses are sent as 16 bytes, so a v4-mapped pair finds a dual-stack
// socket.
func (d *nlPool) lookup(family uint8, src, dst netip.AddrPort) (diagAnswer, error) {
	s, err := d.get()
	if err != nil {
		return diagAnswer{}, err
	}
	a, err := d.exchange(s, family, src, dst)
	// A socket whose exchange went wrong may hold a late answer that the
	// next request would mistake for its own; it is not reused.
	d.put(s, err != nil && !errors.Is(err, errNotFound))
	return a, err
}

func (d *nlPool) exchange(s *nlSock, family uint8, src, dst netip.AddrPort) (diagAnswer, error) {
	seq := d.seq.Add(1)
	var req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[unix.SizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	r[2] = 0 // idiag_ext: INET_DIAG_CGROUP_ID comes without asking
	ne.PutUint32(r[4:], allStates)
	id := r[8:] // struct inet_diag_sockid
	binary.BigEndian.PutUint16(id[0:], src.Port())
	binary.BigEndian.PutUint16(id[2:], dst.Port())
	putAddr(id[4:20], family, src.Addr())
	putAddr(id[20:36], family, dst.Addr())
	// idiag_if 0: any interface. idiag_cookie INET_DIAG_NOCOOKIE: no check.
	ne.PutUint32(id[40:], 0xffffffff)
	ne.PutUint32(id[44:], 0xffffffff)

	if err := unix.Sendto(s.fd, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return diagAnswer{}, fmt.Errorf("sending the sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return diagAnswer{}, fmt.Errorf("receiving the sock_diag answer: %w", err)
		}
		a, done, err := parseDiag(s.buf[:n], seq)
		if done || err != nil {
			return a, err
		}
		// A message for an earlier sequence number: keep reading.
	}
}

func putAddr(b []byte, family uint8, a netip.Addr) {
	if family == unix.AF_INET {
		v4 := a.Unmap().As4()
		copy(b, v4[:])
		return
	}
	v6 := a.As16() // a v4 address becomes ::ffff:a.b.c.d
	copy(b, v6[:])
}

// parseDiag decodes the messages of one datagram. done is false when none of
// them answers request seq.
func parseDiag(b []byte, seq uint32) (a diagAnswer, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		mseq := ne.Uint32(b[8:])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return a, true, fmt.Errorf("malformed sock_diag answer (length %d of %d)", l, len(b))
		}
		msg := b[unix.SizeofNlMsghdr:l]
		b = b[min(nlAlign(l), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return a, true, errors.New("malformed sock_diag error")
			}
			errno := -int32(ne.Uint32(msg))
			if errno == 0 {
				continue // an acknowledgement; the answer is elsewhere
			}
			if unix.Errno(errno) == unix.ENOENT {
				return a, true, errNotFound
			}
			return a, true, fmt.Errorf("sock_diag request: %w", unix.Errno(errno))
		case unix.NLMSG_DONE:
			return a, true, errNotFound
		case unix.SOCK_DIAG_BY_FAMILY:
			a, err = parseInetDiagMsg(msg)
			return a, true, err
		}
	}
	return a, false, nil
}

func parseInetDiagMsg(m []byte) (diagAnswer, error) {
	if len(m) < sizeofInetDiagMsg {
		return diagAnswer{}, fmt.Errorf("short sock_diag answer (%d bytes)", len(m))
	}
	ne := binary.NativeEndian
	a := diagAnswer{
		family: m[0],
		state:  m[1],
		// struct inet_diag_sockid starts at 4; its cookie at 4+40.
		cookie: uint64(ne.Uint32(m[44:])) | uint64(ne.Uint32(m[48:]))<<32,
		uid:    ne.Uint32(m[64:]),
		inode:  ne.Uint32(m[68:]),
	}
	attrs := m[sizeofInetDiagMsg:]
	for len(attrs) >= 4 {
		l := int(ne.Uint16(attrs[0:]))
		typ := ne.Uint16(attrs[2:]) & 0x3fff // drop NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if l < 4 || l > len(attrs) {
			return diagAnswer{}, fmt.Errorf("malformed sock_diag attribute (length %d of %d)", l, len(attrs))
		}
		if typ == inetDiagCgroupID && l >= 4+8 {
			a.cgroupID = ne.Uint64(attrs[4:])
			a.hasCgrp = true
		}
		attrs = attrs[min(nlAlign(l), len(attrs)):]
	}
	return a, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

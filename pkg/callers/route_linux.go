package callers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// isLocal asks the kernel's routing table whether a is an address of this
// host in this network namespace (`ip route get A` says "local"), with one
// RTM_GETROUTE request. The kernel drops a packet arriving on any other link
// whose source is a local address (a martian, unless accept_local is set), so
// a connection whose peer address is local began on this host.
func (d *nlPool) isLocal(a netip.Addr) (bool, error) {
	s, err := d.get()
	if err != nil {
		return false, err
	}
	local, err := d.routeType(s, a)
	d.put(s, err != nil)
	return local, err
}

func (d *nlPool) routeType(s *nlSock, a netip.Addr) (bool, error) {
	a = a.Unmap()
	family, bits := uint8(unix.AF_INET), 32
	if a.Is6() {
		family, bits = unix.AF_INET6, 128
	}
	raw := a.AsSlice()
	seq := d.seq.Add(1)
	ne := binary.NativeEndian
	l := unix.SizeofNlMsghdr + unix.SizeofRtMsg + unix.SizeofRtAttr + len(raw)
	req := make([]byte, l)
	ne.PutUint32(req[0:], uint32(l))
	ne.PutUint16(req[4:], unix.RTM_GETROUTE)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	rt := req[unix.SizeofNlMsghdr:]
	rt[0] = family
	rt[1] = uint8(bits) // rtm_dst_len
	at := rt[unix.SizeofRtMsg:]
	ne.PutUint16(at[0:], uint16(unix.SizeofRtAttr+len(raw)))
	ne.PutUint16(at[2:], unix.RTA_DST)
	copy(at[unix.SizeofRtAttr:], raw)

	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return false, fmt.Errorf("sending the route request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return false, fmt.Errorf("receiving the route answer: %w", err)
		}
		b := s.buf[:n]
		for len(b) >= unix.SizeofNlMsghdr {
			ml := int(ne.Uint32(b[0:]))
			typ := ne.Uint16(b[4:])
			mseq := ne.Uint32(b[8:])
			if ml < unix.SizeofNlMsghdr || ml > len(b) {
				return false, fmt.Errorf("malformed route answer (length %d of %d)", ml, len(b))
			}
			msg := b[unix.SizeofNlMsghdr:ml]
			b = b[min(nlAlign(ml), len(b)):]
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_ERROR:
				if len(msg) < 4 {
					return false, errors.New("malformed route error")
				}
				errno := unix.Errno(-int32(ne.Uint32(msg)))
				if errno == 0 {
					continue
				}
				// No route at all (ENETUNREACH, EHOSTUNREACH): not local.
				if errno == unix.ENETUNREACH || errno == unix.EHOSTUNREACH {
					return false, nil
				}
				return false, fmt.Errorf("route request for %s: %w", a, errno)
			case unix.RTM_NEWROUTE:
				if len(msg) < unix.SizeofRtMsg {
					return false, errors.New("short route answer")
				}
				return msg[7] == unix.RTN_LOCAL, nil // rtm_type
			}
		}
	}
}

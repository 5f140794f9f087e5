package callers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Netlink constants of ctnetlink (include/uapi/linux/netfilter/nfnetlink.h,
// nfnetlink_conntrack.h) that golang.org/x/sys/unix does not define.
const (
	nfnlSubsysCtnetlink = 1
	ipctnlMsgCtNew      = 0
	ipctnlMsgCtGet      = 1

	ctaTupleOrig  = 1
	ctaTupleReply = 2

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	nlaFNested   = 0x8000
	nlaTypeMask  = 0x3fff
	sizeofNfgen  = 4 // struct nfgenmsg
	sizeofNlattr = 4
)

// conntrackOrigin returns the original direction of the connection whose
// reply tuple is local → remote, as the listener's socket sees it: the
// caller's own source address and port, and the destination it connected to.
//
// netfilter may give a connection a source port other than the caller's
// (implicit source-port remapping): when a connection through the DNAT and
// one made straight to the listener from the same address and port would
// otherwise have the same reply tuple, the later one gets another port. The
// listener then sees a port no socket of the caller has, and only conntrack
// still knows the caller's. One exact IPCTNL_MSG_CT_GET request, like the
// sock_diag one; it needs CAP_NET_ADMIN, which the daemon has.
func (d *nlPool) conntrackOrigin(local, remote netip.AddrPort) (src, dst netip.AddrPort, err error) {
	s, err := d.get()
	if err != nil {
		return src, dst, err
	}
	src, dst, err = d.ctExchange(s, local, remote)
	d.put(s, err != nil && !errors.Is(err, errNotFound))
	return src, dst, err
}

func (d *nlPool) ctExchange(s *nlSock, local, remote netip.AddrPort) (src, dst netip.AddrPort, err error) {
	family := uint8(unix.AF_INET6)
	srcType, dstType := uint16(ctaIPv6Src), uint16(ctaIPv6Dst)
	if local.Addr().Unmap().Is4() && remote.Addr().Unmap().Is4() {
		family = unix.AF_INET
		srcType, dstType = ctaIPv4Src, ctaIPv4Dst
	}
	ne := binary.NativeEndian
	attr := func(typ uint16, payload []byte) []byte {
		b := make([]byte, sizeofNlattr, nlAlign(sizeofNlattr+len(payload)))
		ne.PutUint16(b[0:], uint16(sizeofNlattr+len(payload)))
		ne.PutUint16(b[2:], typ)
		b = append(b, payload...)
		return b[:cap(b)]
	}
	addr := func(a netip.Addr) []byte {
		if family == unix.AF_INET {
			v := a.Unmap().As4()
			return v[:]
		}
		v := a.As16()
		return v[:]
	}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	ip := attr(ctaTupleIP|nlaFNested, append(attr(srcType, addr(local.Addr())), attr(dstType, addr(remote.Addr()))...))
	proto := attr(ctaTupleProto|nlaFNested, append(append(attr(ctaProtoNum, []byte{unix.IPPROTO_TCP}),
		attr(ctaProtoSrcPort, port(local.Port()))...), attr(ctaProtoDstPort, port(remote.Port()))...))
	tuple := attr(ctaTupleReply|nlaFNested, append(ip, proto...))

	seq := d.seq.Add(1)
	req := make([]byte, unix.SizeofNlMsghdr+sizeofNfgen, unix.SizeofNlMsghdr+sizeofNfgen+len(tuple))
	req = append(req, tuple...)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], nfnlSubsysCtnetlink<<8|ipctnlMsgCtGet)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	req[unix.SizeofNlMsghdr] = family // nfgen_family; version and res_id 0

	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return src, dst, fmt.Errorf("sending the conntrack request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return src, dst, fmt.Errorf("receiving the conntrack answer: %w", err)
		}
		src, dst, done, err := parseConntrack(s.buf[:n], seq)
		if done || err != nil {
			return src, dst, err
		}
	}
}

// parseConntrack decodes the messages of one datagram; done is false when
// none of them answers request seq.
func parseConntrack(b []byte, seq uint32) (src, dst netip.AddrPort, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		mseq := ne.Uint32(b[8:])
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return src, dst, true, fmt.Errorf("malformed conntrack answer (length %d of %d)", l, len(b))
		}
		msg := b[unix.SizeofNlMsghdr:l]
		b = b[min(nlAlign(l), len(b)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return src, dst, true, errors.New("malformed conntrack error")
			}
			errno := -int32(ne.Uint32(msg))
			if errno == 0 {
				continue
			}
			if unix.Errno(errno) == unix.ENOENT {
				return src, dst, true, errNotFound
			}
			return src, dst, true, fmt.Errorf("conntrack request: %w", unix.Errno(errno))
		case unix.NLMSG_DONE:
			return src, dst, true, errNotFound
		case nfnlSubsysCtnetlink<<8 | ipctnlMsgCtNew:
			if len(msg) < sizeofNfgen {
				return src, dst, true, errors.New("short conntrack answer")
			}
			orig, ok := nlAttr(msg[sizeofNfgen:], ctaTupleOrig)
			if !ok {
				return src, dst, true, errors.New("conntrack answer without the original tuple")
			}
			src, dst, err = parseTuple(orig)
			return src, dst, true, err
		}
	}
	return src, dst, false, nil
}

// parseTuple decodes a CTA_TUPLE_* nest of a TCP connection.
func parseTuple(b []byte) (src, dst netip.AddrPort, err error) {
	ipb, ok1 := nlAttr(b, ctaTupleIP)
	protob, ok2 := nlAttr(b, ctaTupleProto)
	if !ok1 || !ok2 {
		return src, dst, errors.New("conntrack tuple without addresses or ports")
	}
	addr := func(v4, v6 uint16) (netip.Addr, bool) {
		if a, ok := nlAttr(ipb, v4); ok && len(a) == 4 {
			return netip.AddrFrom4([4]byte(a)), true
		}
		if a, ok := nlAttr(ipb, v6); ok && len(a) == 16 {
			return netip.AddrFrom16([16]byte(a)).Unmap(), true
		}
		return netip.Addr{}, false
	}
	port := func(typ uint16) (uint16, bool) {
		p, ok := nlAttr(protob, typ)
		if !ok || len(p) != 2 {
			return 0, false
		}
		return binary.BigEndian.Uint16(p), true
	}
	sa, ok1 := addr(ctaIPv4Src, ctaIPv6Src)
	da, ok2 := addr(ctaIPv4Dst, ctaIPv6Dst)
	sp, ok3 := port(ctaProtoSrcPort)
	dp, ok4 := port(ctaProtoDstPort)
	if num, ok := nlAttr(protob, ctaProtoNum); !ok || len(num) != 1 || num[0] != unix.IPPROTO_TCP {
		return src, dst, errors.New("conntrack tuple is not TCP")
	}
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return src, dst, errors.New("malformed conntrack tuple")
	}
	return netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp), nil
}

// nlAttr returns the payload of the first netlink attribute of type typ in b
// (nested or not).
func nlAttr(b []byte, typ uint16) ([]byte, bool) {
	ne := binary.NativeEndian
	for len(b) >= sizeofNlattr {
		l := int(ne.Uint16(b[0:]))
		t := ne.Uint16(b[2:]) & nlaTypeMask
		if l < sizeofNlattr || l > len(b) {
			return nil, false
		}
		if t == typ {
			return b[sizeofNlattr:l], true
		}
		b = b[min(nlAlign(l), len(b)):]
	}
	return nil, false
}

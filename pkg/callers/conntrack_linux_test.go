package callers

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func nla(typ uint16, payload ...[]byte) []byte {
	var p []byte
	for _, b := range payload {
		p = append(p, b...)
	}
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(p)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, p...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlmsg(typ uint16, seq uint32, payload []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	return append(b, payload...)
}

// TestParseConntrack: the original tuple is read from a ctnetlink answer;
// an error, another request's answer and malformed input are told apart
// and never give an address.
func TestParseConntrack(t *testing.T) {
	be16 := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	tuple := func(typ uint16, src, dst netip.AddrPort, proto byte) []byte {
		s, d := src.Addr().As4(), dst.Addr().As4()
		return nla(typ|nlaFNested,
			nla(ctaTupleIP|nlaFNested, nla(ctaIPv4Src, s[:]), nla(ctaIPv4Dst, d[:])),
			nla(ctaTupleProto|nlaFNested, nla(ctaProtoNum, []byte{proto}), nla(ctaProtoSrcPort, be16(src.Port())), nla(ctaProtoDstPort, be16(dst.Port()))))
	}
	caller := netip.MustParseAddrPort("169.254.169.254:54288")
	imds := netip.MustParseAddrPort("169.254.169.254:80")
	listener := netip.MustParseAddrPort("169.254.169.254:254")
	remapped := netip.MustParseAddrPort("169.254.169.254:4894")
	nfgen := []byte{unix.AF_INET, 0, 0, 0}
	answer := func(seq uint32, proto byte) []byte {
		return nlmsg(nfnlSubsysCtnetlink<<8|ipctnlMsgCtNew, seq,
			append(append(append([]byte{}, nfgen...), tuple(ctaTupleOrig, caller, imds, proto)...), tuple(ctaTupleReply, listener, remapped, proto)...))
	}
	errMsg := func(seq uint32, errno unix.Errno) []byte {
		return nlmsg(unix.NLMSG_ERROR, seq, binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno))))
	}

	src, dst, done, err := parseConntrack(answer(7, unix.IPPROTO_TCP), 7)
	if !done || err != nil || src != caller || dst != imds {
		t.Errorf("answer: %s %s %v %v; want %s %s", src, dst, done, err, caller, imds)
	}
	// Another request's answer first, then ours, in one datagram.
	src, _, done, err = parseConntrack(append(answer(6, unix.IPPROTO_TCP), answer(7, unix.IPPROTO_TCP)...), 7)
	if !done || err != nil || src != caller {
		t.Errorf("two answers: %s %v %v", src, done, err)
	}
	if _, _, done, err := parseConntrack(answer(6, unix.IPPROTO_TCP), 7); done || err != nil {
		t.Errorf("only another request's answer: done %v err %v, want to keep reading", done, err)
	}
	if _, _, _, err := parseConntrack(errMsg(7, unix.ENOENT), 7); !errors.Is(err, errNotFound) {
		t.Errorf("ENOENT: %v, want errNotFound", err)
	}
	if _, _, _, err := parseConntrack(errMsg(7, unix.EPERM), 7); err == nil || errors.Is(err, errNotFound) {
		t.Errorf("EPERM: %v, want an error", err)
	}
	if _, _, _, err := parseConntrack(answer(7, unix.IPPROTO_UDP), 7); err == nil {
		t.Error("a UDP tuple was accepted")
	}
	good := answer(7, unix.IPPROTO_TCP)
	// Cut anywhere before the original tuple ends (the reply tuple is
	// not needed).
	end := unix.SizeofNlMsghdr + len(nfgen) + len(tuple(ctaTupleOrig, caller, imds, unix.IPPROTO_TCP))
	for n := unix.SizeofNlMsghdr; n < end; n++ {
		b := append([]byte(nil), good[:n]...)
		binary.NativeEndian.PutUint32(b, uint32(n)) // a message cut short
		src, _, _, err := parseConntrack(b, 7)
		if err == nil || src.IsValid() {
			t.Fatalf("cut at %d of %d: %s %v, want an error", n, len(good), src, err)
		}
	}
}

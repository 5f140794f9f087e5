package netredirect

import (
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Connection-tracking states (enum tcp_conntrack in the kernel) of a flow
// that no longer has a server socket.
const (
	ctTCPTimeWait = 7
	ctTCPClose    = 8
)

// ForgetClosedFlows removes the conntrack entries of TCP flows that were
// redirected to target and have ended (state CLOSE or TIME_WAIT). It is for
// the moment a listener the redirect pointed at has closed.
//
// Why: when a redirected connection ends with a reset, its conntrack entry
// stays for about ten seconds in state CLOSE with the old DNAT mapping. A
// client that reuses the same source port meanwhile is matched to that
// entry instead of being redirected afresh, so its SYN goes to the closed
// port and is refused, although the redirect already points at the new
// listener. Entries of live connections are left alone: removing one
// would break a request still being answered on the old listener.
// It returns how many entries it removed.
func ForgetClosedFlows(target netip.AddrPort) (uint, error) {
	family := netlink.FAMILY_V4
	if target.Addr().Is6() && !target.Addr().Is4In6() {
		family = netlink.FAMILY_V6
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(family), closedFlowTo(target))
	if err != nil {
		return n, errors.New("removing ended flows to " + target.String() + " from conntrack: " + err.Error())
	}
	return n, nil
}

// closedFlowTo matches ended TCP flows whose reply comes from target, the
// address a DNAT rule sent them to.
type closedFlowTo netip.AddrPort

func (c closedFlowTo) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	t := netip.AddrPort(c)
	if f.Reverse.Protocol != 6 || f.Reverse.SrcPort != t.Port() {
		return false
	}
	src, ok := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok || src.Unmap() != t.Addr().Unmap() {
		return false
	}
	p, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP)
	return ok && (p.State == ctTCPClose || p.State == ctTCPTimeWait)
}

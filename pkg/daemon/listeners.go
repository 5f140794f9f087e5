package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/imds-shim/imds-shim/pkg/config"
)

// ListenerPlanner is implemented by a Network that decides in Setup which
// addresses the daemon must listen on for its redirect to reach it
// (netredirect.Redirector: the IPv4 target and, when IPv6 turned out to be
// available, [fd00:ec2::254] on the same port). The answer is read after
// every Setup.
type ListenerPlanner interface {
	Listeners() []netip.AddrPort
}

// boundListener is one metadata listener and the address it was asked to
// bind (its key: Addr() of a wrapped or test listener may differ).
type boundListener struct {
	addr netip.AddrPort
	ln   net.Listener
}

// wantListeners is every address the metadata API must listen on for cfg
// with network (nil when not managed) set up: imds.listen first, then what
// the network planned, each once.
func wantListeners(cfg *config.Config, network Network) []netip.AddrPort {
	want := []netip.AddrPort{cfg.IMDS.Listen}
	if p, ok := network.(ListenerPlanner); ok {
		for _, a := range p.Listeners() {
			if !slices.Contains(want, a) {
				want = append(want, a)
			}
		}
	}
	return want
}

// bind binds each address in addrs that keep does not already hold, with
// hop limit hop, and returns the full set in the order of addrs plus the
// newly bound ones. On error the newly bound ones are closed again.
func (d *daemon) bind(addrs []netip.AddrPort, hop int, keep []boundListener) (all, added []boundListener, err error) {
	for _, a := range addrs {
		if i := slices.IndexFunc(keep, func(b boundListener) bool { return b.addr == a }); i >= 0 {
			all = append(all, keep[i])
			continue
		}
		ln, err := d.deps.Listen(a.String(), hop)
		if err != nil {
			closeAll(added)
			return nil, nil, fmt.Errorf("binding the metadata listener %s: %w", a, err)
		}
		b := boundListener{addr: a, ln: ln}
		all, added = append(all, b), append(added, b)
	}
	return all, added, nil
}

// without returns the listeners of ls whose address is not in addrs.
func without(ls []boundListener, addrs []netip.AddrPort) []boundListener {
	var out []boundListener
	for _, b := range ls {
		if !slices.Contains(addrs, b.addr) {
			out = append(out, b)
		}
	}
	return out
}

func closeAll(ls []boundListener) {
	for _, b := range ls {
		b.ln.Close()
	}
}

func addrsOf(ls []boundListener) []netip.AddrPort {
	out := make([]netip.AddrPort, len(ls))
	for i, b := range ls {
		out[i] = b.addr
	}
	return out
}

// setHopLimits sets hop on every listener, and on failure puts back old on
// those already changed.
func setHopLimits(ls []boundListener, hop, old int) error {
	for i, b := range ls {
		hl, ok := b.ln.(hopLimiter)
		var err error
		if !ok {
			err = fmt.Errorf("imds.hop_limit: the metadata listener %s cannot change its hop limit", b.addr)
		} else if err = hl.SetHopLimit(hop); err != nil {
			err = fmt.Errorf("imds.hop_limit: %w", err)
		}
		if err != nil {
			var errs []error
			for _, p := range ls[:i] {
				if rerr := p.ln.(hopLimiter).SetHopLimit(old); rerr != nil {
					errs = append(errs, fmt.Errorf("restoring the hop limit on %s: %w", p.addr, rerr))
				}
			}
			return errors.Join(append([]error{err}, errs...)...)
		}
	}
	return nil
}

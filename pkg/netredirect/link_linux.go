package netredirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linksAPI is the part of netlink the package uses. netlinkLinks adapts a
// *netlink.Handle to it; tests substitute an in-memory fake.
type linksAPI interface {
	// LinkByName returns errLinkNotFound when there is no such link.
	LinkByName(name string) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	// AddrSubscribe sends address changes to ch until done is closed, then
	// closes ch.
	AddrSubscribe(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onError func(error)) error
}

// errLinkNotFound is what linksAPI.LinkByName returns for a missing link.
var errLinkNotFound = errors.New("link not found")

// netlinkLinks is linksAPI on the real kernel, in the caller's network
// namespace.
type netlinkLinks struct{ h *netlink.Handle }

var _ linksAPI = netlinkLinks{}

// dumpRetries bounds the retries of a netlink dump that the kernel flagged
// NLM_F_DUMP_INTR (the list changed while it was being read); the partial
// result must not be trusted (see containernetworking/plugins netlinksafe).
const dumpRetries = 5

func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return v, err
}

func (n netlinkLinks) LinkByName(name string) (netlink.Link, error) {
	l, err := retryDump(func() (netlink.Link, error) { return n.h.LinkByName(name) })
	if _, ok := errors.AsType[netlink.LinkNotFoundError](err); ok {
		return nil, fmt.Errorf("%w: %s", errLinkNotFound, name)
	}
	return l, err
}

func (n netlinkLinks) LinkList() ([]netlink.Link, error) { return retryDump(n.h.LinkList) }

// LinkAdd creates l with its alias. The kernel does not apply IFLA_IFALIAS
// when it creates a link (Debian's 6.1 kernel creates the dummy link without
// it, found by the stock-kernel suite), so the alias is set in a second
// step; if that fails the new link is removed again.
func (n netlinkLinks) LinkAdd(l netlink.Link) error {
	if err := n.h.LinkAdd(l); err != nil {
		return err
	}
	alias := l.Attrs().Alias
	if alias == "" {
		return nil
	}
	created, err := n.h.LinkByName(l.Attrs().Name)
	if err == nil {
		if err = n.h.LinkSetAlias(created, alias); err != nil {
			_ = n.h.LinkDel(created)
		}
	}
	if err != nil {
		return fmt.Errorf("setting alias %q on new link %s: %w", alias, l.Attrs().Name, err)
	}
	return nil
}

func (n netlinkLinks) LinkDel(l netlink.Link) error   { return n.h.LinkDel(l) }
func (n netlinkLinks) LinkSetUp(l netlink.Link) error { return n.h.LinkSetUp(l) }
func (n netlinkLinks) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return n.h.AddrList(l, family) })
}
func (n netlinkLinks) AddrAdd(l netlink.Link, a *netlink.Addr) error { return n.h.AddrAdd(l, a) }
func (n netlinkLinks) AddrDel(l netlink.Link, a *netlink.Addr) error { return n.h.AddrDel(l, a) }
func (n netlinkLinks) AddrSubscribe(ch chan<- netlink.AddrUpdate, done <-chan struct{}, onError func(error)) error {
	return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{ErrorCallback: onError})
}

// linkPlan is the link that carries the address, once resolved.
type linkPlan struct {
	name  string
	dummy bool // created, owned and removed by imds-shim
}

func (l linkPlan) String() string {
	if l.dummy {
		return l.name + " (dummy)"
	}
	return l.name
}

// isOurDummy reports whether l is a dummy link imds-shim created.
func isOurDummy(l netlink.Link) bool {
	return l.Type() == "dummy" && l.Attrs().Alias == LinkAlias
}

// resolveLink decides which link carries the address. With create, a
// missing dummy link is created (recorded in j); without it, nothing changes
// and "auto" means the dummy link only when it already exists.
func resolveLink(links linksAPI, cfg Config, create bool, j *journal) (linkPlan, []string, error) {
	switch cfg.Link {
	case LinkLo:
		return linkPlan{name: LinkLo}, nil, nil
	case LinkAuto, LinkDummy:
	default:
		return linkPlan{name: cfg.Link}, nil, nil
	}
	l, err := links.LinkByName(cfg.DummyName)
	switch {
	case err == nil && isOurDummy(l):
		return linkPlan{name: cfg.DummyName, dummy: true}, nil, nil
	case err == nil && cfg.Link == LinkDummy:
		return linkPlan{}, nil, fmt.Errorf("checking link %s: it exists but is not a dummy link with alias %q, so it is not ours", cfg.DummyName, LinkAlias)
	case err == nil:
		return linkPlan{name: LinkLo}, nil, nil // auto: someone else's imds0; stay off it
	case !errors.Is(err, errLinkNotFound):
		return linkPlan{}, nil, fmt.Errorf("looking up link %s: %w", cfg.DummyName, err)
	case !create && cfg.Link == LinkAuto:
		return linkPlan{name: LinkLo}, nil, nil
	case !create:
		return linkPlan{name: cfg.DummyName, dummy: true}, nil, nil
	}
	err = addDummy(links, cfg.DummyName, j)
	if errors.Is(err, unix.EOPNOTSUPP) && cfg.Link == LinkAuto {
		return linkPlan{name: LinkLo}, nil, nil
	}
	if err != nil {
		return linkPlan{}, nil, err
	}
	return linkPlan{name: cfg.DummyName, dummy: true}, []string{"link " + cfg.DummyName}, nil
}

// addDummy creates our dummy link, marked with LinkAlias.
func addDummy(links linksAPI, name string, j *journal) error {
	d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Alias: LinkAlias}}
	if err := links.LinkAdd(d); err != nil {
		return fmt.Errorf("creating dummy link %s: %w", name, err)
	}
	j.add(func() error { return removeDummy(links, name) })
	return nil
}

// ensureAddr brings the link up (only if it is our dummy) and adds the
// address with our label unless the link already has it. An unlabelled copy
// put there by someone else is accepted as is and never removed.
func ensureAddr(links linksAPI, lp linkPlan, p netip.Prefix, j *journal) ([]string, error) {
	var changes []string
	l, err := links.LinkByName(lp.name)
	if lp.dummy && errors.Is(err, errLinkNotFound) {
		// Deleted since Setup chose it: recreate it.
		if err := addDummy(links, lp.name, j); err != nil {
			return nil, err
		}
		changes = append(changes, "link "+lp.name)
		l, err = links.LinkByName(lp.name)
	}
	if err != nil {
		return changes, fmt.Errorf("looking up link %s: %w", lp.name, err)
	}
	if lp.dummy {
		if !isOurDummy(l) {
			return nil, fmt.Errorf("checking link %s: it is no longer a dummy link with alias %q", lp.name, LinkAlias)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			if err := links.LinkSetUp(l); err != nil {
				return nil, fmt.Errorf("bringing link %s up: %w", lp.name, err)
			}
			changes = append(changes, "link "+lp.name+" up")
		}
	}
	addrs, err := links.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return changes, fmt.Errorf("listing addresses of %s: %w", lp.name, err)
	}
	present := false
	for _, a := range addrs {
		switch {
		case prefixOf(a) == p:
			present = true
		case a.Label == label(lp.name):
			// Ours from an earlier configuration (another Addr): the
			// plan no longer has it.
			if err := delOne(links, l, &a); err != nil {
				return changes, err
			}
			changes = append(changes, "stale address "+prefixOf(a).String()+" on "+lp.name)
		}
	}
	if present {
		return changes, nil
	}
	addr := &netlink.Addr{IPNet: ipNet(p), Label: label(lp.name), Scope: unix.RT_SCOPE_HOST}
	err = links.AddrAdd(l, addr)
	if errors.Is(err, unix.EEXIST) {
		return changes, nil // added by someone else meanwhile: not ours to undo
	}
	if err != nil {
		return changes, fmt.Errorf("adding address %s to %s: %w", p, lp.name, err)
	}
	j.add(func() error { return delAddr(links, lp.name, p) })
	return append(changes, "address "+p.String()+" on "+lp.name), nil
}

// ensureAddr6 adds the IPv6 endpoint p to the link of lp (already made
// present by ensureAddr) with nodad, unless it is there. IPv6 addresses carry
// no label; ours is recognised as exactly p with the nodad flag on the link
// that carries our IPv4 address (see delOwnedAddrs6).
func ensureAddr6(links linksAPI, lp linkPlan, p netip.Prefix, j *journal) ([]string, error) {
	l, err := links.LinkByName(lp.name)
	if err != nil {
		return nil, fmt.Errorf("looking up link %s: %w", lp.name, err)
	}
	a, err := findAddr(links, l, p)
	if err != nil || a != nil {
		return nil, err
	}
	// nodad: without it the address stays "tentative" for a while on a
	// dummy link (and on a link with optimistic DAD) and cannot be bound.
	err = links.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p), Flags: unix.IFA_F_NODAD})
	if errors.Is(err, unix.EEXIST) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("adding address %s to %s: %w", p, lp.name, err)
	}
	j.add(func() error { return delAddr6(links, lp.name, p) })
	return []string{"address " + p.String() + " on " + lp.name}, nil
}

// isOurAddr6 reports whether a is the IPv6 endpoint as imds-shim adds it.
func isOurAddr6(a netlink.Addr, p netip.Prefix) bool {
	return prefixOf(a) == p && a.Flags&unix.IFA_F_NODAD != 0
}

// delAddr6 removes the IPv6 endpoint p from the link named name if it
// carries the nodad flag imds-shim adds it with.
func delAddr6(links linksAPI, name string, p netip.Prefix) error {
	l, err := links.LinkByName(name)
	if errors.Is(err, errLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up link %s: %w", name, err)
	}
	_, err = delOwnedAddrs6(links, l, p)
	return err
}

// delOwnedAddrs6 removes the IPv6 endpoint p from l if it is ours
// (isOurAddr6). The caller decides that l is a link imds-shim uses: our
// dummy, or a link carrying our labelled IPv4 address.
func delOwnedAddrs6(links linksAPI, l netlink.Link, p netip.Prefix) ([]string, error) {
	addrs, err := links.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if isOurAddr6(a, p) {
			if err := delOne(links, l, &a); err != nil {
				return nil, err
			}
			return []string{"address " + p.String() + " on " + l.Attrs().Name}, nil
		}
	}
	return nil, nil
}

// hasOwnedAddr reports whether l carries an IPv4 address with our label.
func hasOwnedAddr(links linksAPI, l netlink.Link) (bool, error) {
	addrs, err := links.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.Label == label(l.Attrs().Name) {
			return true, nil
		}
	}
	return false, nil
}

// family is the netlink address family of p.
func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// findAddr returns the address p on l, or nil.
func findAddr(links linksAPI, l netlink.Link, p netip.Prefix) (*netlink.Addr, error) {
	addrs, err := links.AddrList(l, family(p))
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if prefixOf(a) == p {
			return &a, nil
		}
	}
	return nil, nil
}

// delAddr removes p from the link named name if it carries our label.
func delAddr(links linksAPI, name string, p netip.Prefix) error {
	l, err := links.LinkByName(name)
	if errors.Is(err, errLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up link %s: %w", name, err)
	}
	a, err := findAddr(links, l, p)
	if err != nil || a == nil || a.Label != label(name) {
		return err
	}
	return delOne(links, l, a)
}

// delOwnedAddrs removes every IPv4 address on l that carries our label.
func delOwnedAddrs(links linksAPI, l netlink.Link) ([]string, error) {
	addrs, err := links.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	var (
		removed []string
		errs    []error
	)
	for _, a := range addrs {
		if a.Label != label(l.Attrs().Name) {
			continue
		}
		if err := delOne(links, l, &a); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "address "+prefixOf(a).String()+" on "+l.Attrs().Name)
	}
	return removed, errors.Join(errs...)
}

func delOne(links linksAPI, l netlink.Link, a *netlink.Addr) error {
	err := links.AddrDel(l, a)
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("deleting address %s from %s: %w", prefixOf(*a), l.Attrs().Name, err)
	}
	return nil
}

// removeDummy deletes the link named name if it is a dummy imds-shim created.
func removeDummy(links linksAPI, name string) error {
	l, err := links.LinkByName(name)
	if errors.Is(err, errLinkNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking up link %s: %w", name, err)
	}
	if !isOurDummy(l) {
		return nil
	}
	if err := links.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(a netlink.Addr) netip.Prefix {
	if a.IPNet == nil {
		return netip.Prefix{}
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}

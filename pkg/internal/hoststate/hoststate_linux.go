package hoststate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options says what Take reads beyond the namespace itself.
type Options struct {
	// NamedNetns adds the named network namespaces (/run/netns), which
	// belong to the mount namespace rather than the network namespace.
	NamedNetns bool
}

// savers are the iptables-save programs, one per backend and family.
// arptables and ebtables are read for nft only (Debian's iptables package
// ships arptables-nft and ebtables-nft; the legacy ones are other packages);
// where they are missing nothing could have installed rules with them, so
// they are optional.
var savers = []struct {
	backend, family, cmd string
	optional             bool
}{
	{"nft", "ipv4", "iptables-nft-save", false},
	{"nft", "ipv6", "ip6tables-nft-save", false},
	{"nft", "arp", "arptables-nft-save", true},
	{"nft", "bridge", "ebtables-nft-save", true},
	{"legacy", "ipv4", "iptables-legacy-save", false},
	{"legacy", "ipv6", "ip6tables-legacy-save", false},
}

// Take reads the current network namespace's state.
func Take(opts Options) (*Snapshot, error) {
	s := &Snapshot{Sysctls: map[string]string{}}
	var errs []error
	if err := s.readLinksAndAddrs(); err != nil {
		errs = append(errs, err)
	}
	for _, sv := range savers {
		if _, err := exec.LookPath(sv.cmd); err != nil && sv.optional {
			continue
		}
		if err := s.readIptables(sv.backend, sv.family, sv.cmd); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.readSysctls(); err != nil {
		errs = append(errs, err)
	}
	if opts.NamedNetns {
		ents, err := os.ReadDir("/run/netns")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("listing /run/netns: %w", err))
		}
		s.Netns = []string{}
		for _, e := range ents {
			s.Netns = append(s.Netns, e.Name())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.normalise()
	return s, nil
}

func (s *Snapshot) readLinksAndAddrs() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		a := l.Attrs()
		byIndex[a.Index] = l
		s.Links = append(s.Links, Link{Name: a.Name, Kind: l.Type(), Alias: a.Alias, Up: a.Flags&net.FlagUp != 0})
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		l, ok := byIndex[a.LinkIndex]
		if !ok {
			// A link created between the two calls; its own listing is
			// not in this snapshot either.
			continue
		}
		if ours(l) && a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
			continue // new each time the link is created
		}
		label := a.Label
		if a.IP.To4() == nil {
			label = "" // IPv6 addresses have none; netlink may echo the link name
		}
		s.Addrs = append(s.Addrs, Addr{Link: l.Attrs().Name, Prefix: a.IPNet.String(), Scope: scopeName(a.Scope), Label: label})
	}
	return nil
}

// ownedLinkAlias is netredirect.LinkAlias, the ownership marker of
// imds-shim's dummy link, which never changes between versions. It is not
// imported so that netredirect's own tests can use this package; a test
// checks that the two agree.
const ownedLinkAlias = "imds-shim"

// ours reports whether l is imds-shim's own dummy link.
func ours(l netlink.Link) bool {
	return l.Type() == "dummy" && l.Attrs().Alias == ownedLinkAlias
}

func scopeName(sc int) string {
	switch sc {
	case unix.RT_SCOPE_UNIVERSE:
		return "global"
	case unix.RT_SCOPE_SITE:
		return "site"
	case unix.RT_SCOPE_LINK:
		return "link"
	case unix.RT_SCOPE_HOST:
		return "host"
	case unix.RT_SCOPE_NOWHERE:
		return "nowhere"
	}
	return fmt.Sprint(sc)
}

func (s *Snapshot) readIptables(backend, family, cmd string) error {
	path, err := exec.LookPath(cmd)
	if err != nil {
		return fmt.Errorf("%s: %w (install iptables)", cmd, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, path)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	rules, err := parseSave(backend, family, out)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	s.Iptables = append(s.Iptables, rules...)
	return nil
}

// parseSave reads iptables-save output into facts: every rule, every user
// chain, and the built-in chains whose policy is not ACCEPT.
func parseSave(backend, family string, out []byte) ([]Rule, error) {
	var rules []Rule
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 || table == "" {
				return nil, fmt.Errorf("unexpected chain line %q", line)
			}
			r := Rule{Backend: backend, Family: family, Table: table, Chain: f[0]}
			switch f[1] {
			case "-":
				r.Spec = "user chain"
			case "ACCEPT":
				continue
			default:
				r.Spec = "policy " + f[1]
			}
			rules = append(rules, r)
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if len(f) < 2 || table == "" {
				return nil, fmt.Errorf("unexpected rule line %q", line)
			}
			rules = append(rules, Rule{Backend: backend, Family: family, Table: table, Chain: f[1], Spec: line})
		default:
			return nil, fmt.Errorf("unexpected line %q", line)
		}
	}
	return rules, sc.Err()
}

// sysctl names, per interface entry.
var (
	ipv4ConfKeys = []string{"route_localnet", "arp_ignore", "arp_announce", "rp_filter", "accept_local"}
	ipv6ConfKeys = []string{"disable_ipv6"}
)

func (s *Snapshot) readSysctls() error {
	var errs []error
	read := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		name := strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", ".")
		s.Sysctls[name] = strings.TrimSpace(string(b))
	}
	read("/proc/sys/net/ipv4/ip_forward")
	for _, fam := range []struct {
		dir  string
		keys []string
	}{{"/proc/sys/net/ipv4/conf", ipv4ConfKeys}, {"/proc/sys/net/ipv6/conf", ipv6ConfKeys}} {
		ents, err := os.ReadDir(fam.dir)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) { // no IPv6 in this kernel
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range ents {
			for _, k := range fam.keys {
				read(filepath.Join(fam.dir, e.Name(), k))
			}
		}
	}
	return errors.Join(errs...)
}

package netredirect

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Link modes accepted in Config.Link besides the name of an existing link.
const (
	LinkAuto  = "auto"  // the dummy link, or lo where the kernel has no dummy driver
	LinkDummy = "dummy" // the dummy link; fail where the kernel has no dummy driver
	LinkLo    = "lo"    // the loopback link
)

// Backends accepted in Config.Backend.
const (
	BackendAuto   = "auto"
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// Ownership markers. They are how Teardown and Cleanup recognise what
// imds-shim installed, so they never change between versions.
const (
	// ChainPrefix starts the name of every chain imds-shim owns.
	ChainPrefix = "IMDS-SHIM-"
	// Comment is the iptables comment on every rule, for operators.
	Comment = "imds-shim"
	// LinkAlias is the alias (IFLA_IFALIAS) of the dummy link imds-shim creates.
	LinkAlias = "imds-shim"
	// LabelSuffix follows the link name in the label of our address
	// ("lo:imds"); an address without it is never ours.
	LabelSuffix = ":imds"
)

// Names of the owned chains.
const (
	natChain       = ChainPrefix + "OUTPUT"     // nat OUTPUT: the host's own callers
	preroutChain   = ChainPrefix + "PREROUTING" // nat PREROUTING: callers on Config.Containers bridges
	fenceChain     = ChainPrefix + "INPUT"      // filter INPUT: nothing off the host reaches the endpoint or listener
	arpChain       = ChainPrefix + "ARP"        // arptables INPUT: no ARP answers for the endpoint
	oldFilterChain = ChainPrefix + "FORWARD"    // no longer planned; removed as stale where an older version left it
)

// IPv6 modes accepted in Config.IPv6.
const (
	IPv6Auto  = "auto"  // answer at [fd00:ec2::254] when the host has IPv6; stay silent otherwise
	IPv6True  = "true"  // answer at [fd00:ec2::254]; no IPv6 is an error
	IPv6False = "false" // IPv4 only
)

// ErrLoopbackTarget is wrapped by Validate when Config.Containers is set and
// Config.Target is a loopback address: a packet DNATed in PREROUTING to
// 127.0.0.0/8 is dropped as a martian unless route_localnet=1, which
// imds-shim never sets (it would let on-link neighbours reach loopback
// services). The daemon must listen on a non-loopback address, normally
// 169.254.169.254 itself, for containers to be served.
var ErrLoopbackTarget = errors.New("containers cannot reach a loopback target")

// Defaults of Config; DefaultConfig returns them all, including the address
// 169.254.169.254 and the target 127.0.0.1:8254.
const (
	DefaultPort      uint16 = 80
	DefaultDummyName        = "imds0"
	DefaultReconcile        = 10 * time.Second
)

var (
	defaultAddr   = netip.AddrFrom4([4]byte{169, 254, 169, 254})
	defaultTarget = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 8254)
	// addr6 is EC2's IPv6 endpoint; claimed as a /128 when IPv6 is on.
	addr6 = netip.MustParseAddr("fd00:ec2::254")
)

// IPv6Addr is the IPv6 endpoint address, fd00:ec2::254, as EC2 has it.
func IPv6Addr() netip.Addr { return addr6 }

// IPv6Target is the listener the IPv6 redirect sends to for an IPv4 target:
// [fd00:ec2::254] on the same port. IPv6 has no route_localnet, so [::1]
// could not serve containers; the endpoint address itself serves host and
// container callers alike. The daemon must bind it when IPv6 is active
// (Redirector.Listeners).
func IPv6Target(v4 netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(addr6, v4.Port()) }

// maxIfNameLen is the longest interface name (and address label) the kernel
// accepts: IFNAMSIZ minus the terminating NUL.
const maxIfNameLen = 15

// Config says which address to claim, where, and where to send its traffic.
// Zero fields take their defaults (WithDefaults).
type Config struct {
	// Addr is the IPv4 address claimed as a /32; 169.254.169.254 by default.
	Addr netip.Addr
	// Port is the tcp port of Addr that is redirected; 80 by default.
	Port uint16
	// Link is "auto", "dummy", "lo" or the name of an existing link that
	// imds-shim will add the address to but never create or delete.
	Link string
	// DummyName is the name of the dummy link for "auto" and "dummy".
	DummyName string
	// Target is the daemon's listener the traffic is redirected to.
	Target netip.AddrPort
	// Backend is "auto", "nft" or "legacy".
	Backend string
	// ReconcileInterval is how often Run re-checks everything, besides on
	// address removals and (nft backend) ruleset changes; 10 s by default.
	ReconcileInterval time.Duration
	// Containers names the bridges whose traffic to Addr:Port (and to
	// [fd00:ec2::254]:Port) is redirected too, in nat PREROUTING. A bridge
	// that does not exist yet is fine: its rules match once it appears.
	// Empty: only the host's own processes are redirected.
	Containers []string
	// IPv6 is "auto" (the default), "true" or "false": whether to answer at
	// [fd00:ec2::254] too (see IPv6Target).
	IPv6 string
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config { return Config{}.WithDefaults() }

// WithDefaults returns c with each zero field set to its default.
func (c Config) WithDefaults() Config {
	if !c.Addr.IsValid() {
		c.Addr = defaultAddr
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Link == "" {
		c.Link = LinkAuto
	}
	if c.DummyName == "" {
		c.DummyName = DefaultDummyName
	}
	if !c.Target.IsValid() {
		c.Target = defaultTarget
	}
	if c.Backend == "" {
		c.Backend = BackendAuto
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcile
	}
	if c.IPv6 == "" {
		c.IPv6 = IPv6Auto
	}
	return c
}

// Validate reports every problem of c (after defaults) in one error.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch a := c.Addr; {
	case !a.Is4():
		bad("addr", "%s is not an IPv4 address (only IPv4 is supported)", a)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		bad("addr", "%s cannot be claimed as a /32 (unspecified, loopback, multicast or broadcast)", a)
	}
	switch t := c.Target; {
	case !t.Addr().Is4():
		bad("target", "%s is not an IPv4 address and port", t)
	case t.Port() == 0:
		bad("target", "%s has port 0; the redirect needs a fixed port", t)
	case t.Addr().IsUnspecified() || t.Addr().IsMulticast():
		bad("target", "%s is not a unicast address", t)
	case t == netip.AddrPortFrom(c.Addr, c.Port):
		bad("target", "%s is the redirected address itself; the DNAT would loop", t)
	}
	switch c.Backend {
	case BackendAuto, BackendNFT, BackendLegacy:
	default:
		bad("backend", "%q must be auto, nft or legacy", c.Backend)
	}
	if err := checkLinkName(c.DummyName); err != nil {
		bad("dummy name", "%v", err)
	}
	switch c.Link {
	case LinkAuto, LinkDummy, LinkLo:
	default:
		if err := checkLinkName(c.Link); err != nil {
			bad("link", "must be auto, dummy, lo or a link name: %v", err)
		}
	}
	if c.ReconcileInterval < 0 {
		bad("reconcile interval", "%s is negative", c.ReconcileInterval)
	}
	switch c.IPv6 {
	case IPv6Auto, IPv6True, IPv6False:
		if t := c.Target; c.IPv6 != IPv6False && t.Port() == c.Port && t.Addr().Is4() {
			bad("ipv6", "the IPv6 redirect would send [%s]:%d to itself: the target port must differ from the redirected port %d, or set ipv6 to false",
				addr6, c.Port, c.Port)
		}
	default:
		bad("ipv6", "%q must be auto, true or false", c.IPv6)
	}
	seen := map[string]bool{}
	for i, b := range c.Containers {
		field := fmt.Sprintf("containers[%d]", i)
		switch {
		case b == LinkLo:
			bad(field, "lo is not a bridge; the host's own callers are always redirected")
		case seen[b]:
			bad(field, "%q is listed twice", b)
		default:
			if err := checkIfName(b); err != nil {
				bad(field, "%v", err)
			}
		}
		seen[b] = true
	}
	if t := c.Target.Addr(); len(c.Containers) > 0 && t.IsLoopback() {
		errs = append(errs, fmt.Errorf("target: %s: %w (the kernel drops loopback destinations arriving on a bridge unless route_localnet=1, which imds-shim never sets); listen on %s:<port> instead",
			c.Target, ErrLoopbackTarget, c.Addr))
	}
	return errors.Join(errs...)
}

// checkIfName accepts a name the kernel would accept for a link.
func checkIfName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%q is not a valid link name", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("%q contains a character link names cannot have", name)
	case len(name) > maxIfNameLen:
		return fmt.Errorf("%q is longer than %d bytes", name, maxIfNameLen)
	}
	return nil
}

// checkLinkName accepts a name the kernel would accept for a link and that
// leaves room for LabelSuffix in the address label.
func checkLinkName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%q is not a valid link name", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("%q contains a character link names cannot have", name)
	case len(name)+len(LabelSuffix) > maxIfNameLen:
		return fmt.Errorf("%q is too long: the ownership label %q must fit in %d bytes", name, name+LabelSuffix, maxIfNameLen)
	}
	return nil
}

// label is the address label that marks our address on link.
func label(link string) string { return link + LabelSuffix }

// prefix is the address as the /32 that is installed.
func (c Config) prefix() netip.Prefix { return netip.PrefixFrom(c.Addr, 32) }

// prefix6 is the IPv6 endpoint as the /128 that is installed.
func (c Config) prefix6() netip.Prefix { return netip.PrefixFrom(addr6, 128) }

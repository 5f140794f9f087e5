package hoststate

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
	"github.com/imds-shim/imds-shim/pkg/netredirect"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func take(t *testing.T) *Snapshot {
	t.Helper()
	s, err := Take(Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sh(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
}

// TestTakeSeesEveryChange: each kind of change imds-shim could make is a
// difference, named as a fact; undoing it gives the first state back,
// although iptables-nft keeps the tables it used registered.
func TestTakeSeesEveryChange(t *testing.T) {
	nstest.RequireRootNetns(t)
	before := take(t)
	for _, tt := range []struct {
		name     string
		do, undo []string
		want     []string
	}{
		{"address", []string{"ip addr add 169.254.169.254/32 dev lo scope host label lo:imds"},
			[]string{"ip addr del 169.254.169.254/32 dev lo"},
			[]string{"+ address 169.254.169.254/32 on lo scope host label lo:imds"}},
		{"nft rule and chain", []string{"iptables-nft -t nat -N IMDS-T", "iptables-nft -t nat -A OUTPUT -d 169.254.169.254 -p tcp --dport 80 -j IMDS-T"},
			[]string{"iptables-nft -t nat -F OUTPUT", "iptables-nft -t nat -X IMDS-T"},
			[]string{"+ iptables nft ipv4 nat: chain IMDS-T user chain",
				"+ iptables nft ipv4 nat: -A OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j IMDS-T (#1 in chain)"}},
		{"legacy ipv6 rule", []string{"ip6tables-legacy -t nat -A OUTPUT -d fd00:ec2::254 -p tcp --dport 80 -j DNAT --to-destination [::1]:8099"},
			[]string{"ip6tables-legacy -t nat -F OUTPUT"},
			[]string{"+ iptables legacy ipv6 nat: -A OUTPUT -d fd00:ec2::254/128 -p tcp -m tcp --dport 80 -j DNAT --to-destination [::1]:8099 (#1 in chain)"}},
		{"arptables", []string{"arptables-nft -N IMDS-T", "arptables-nft -A INPUT -d 169.254.169.254 -j IMDS-T"},
			[]string{"arptables-nft -F INPUT", "arptables-nft -X IMDS-T"},
			[]string{"+ iptables nft arp filter: chain IMDS-T user chain",
				"+ iptables nft arp filter: -A INPUT -j IMDS-T -d 169.254.169.254 (#1 in chain)"}},
		{"policy", []string{"iptables-nft -P FORWARD DROP"}, []string{"iptables-nft -P FORWARD ACCEPT"},
			[]string{"+ iptables nft ipv4 filter: chain FORWARD policy DROP"}},
		{"sysctl", []string{"sysctl -qw net.ipv4.conf.lo.route_localnet=1"}, []string{"sysctl -qw net.ipv4.conf.lo.route_localnet=0"},
			[]string{"- sysctl net.ipv4.conf.lo.route_localnet = 0", "+ sysctl net.ipv4.conf.lo.route_localnet = 1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sh(t, tt.do...)
			got := before.Diff(take(t))
			sh(t, tt.undo...)
			if want := strings.Join(tt.want, "\n") + "\n"; got != want {
				t.Errorf("diff:\n%swant:\n%s", got, want)
			}
			if d := before.Diff(take(t)); d != "" {
				t.Errorf("undone, yet:\n%s", d)
			}
		})
	}
}

// TestTentativeIsNoDifference: an IPv6 address still in duplicate address
// detection is the same fact as once it is done; its link, removed, is a
// difference.
func TestTentativeIsNoDifference(t *testing.T) {
	nstest.RequireRootNetns(t)
	before := take(t)
	// The kernel announces the end of DAD as a new RTM_NEWADDR without the
	// tentative flag.
	updates, done := make(chan netlink.AddrUpdate, 64), make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribe(updates, done); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip link add h5st0 type veth peer name h5st1", "ip link set h5st0 up", "ip link set h5st1 up",
		"ip addr add 2001:db8::1/64 dev h5st0")
	early := take(t)
	l, err := netlink.LinkByName("h5st0")
	if err != nil {
		t.Fatal(err)
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	tentative := 0
	for _, a := range as {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			tentative++
		}
	}
	if tentative == 0 {
		t.Fatal("no tentative address right after adding it; the test proves nothing")
	}
	timeout := time.After(30 * time.Second)
	for tentative > 0 {
		select {
		case u := <-updates:
			if u.LinkIndex == l.Attrs().Index && u.NewAddr && u.Flags&unix.IFA_F_TENTATIVE == 0 && u.LinkAddress.IP.To4() == nil {
				tentative--
			}
		case <-timeout:
			t.Fatal("DAD still running after 30s")
		}
	}
	if d := early.Diff(take(t)); d != "" {
		t.Errorf("the end of DAD is a difference:\n%s", d)
	}
	if !early.Has("address 2001:db8::1/64 on h5st0 scope global") || !early.Has("link h5st1 kind veth up") {
		t.Errorf("the veth or its address is missing:\n%s", strings.Join(early.Facts(), "\n"))
	}
	sh(t, "ip link del h5st0")
	if d := before.Diff(take(t)); d != "" {
		t.Errorf("veth removed, yet:\n%s", d)
	}
}

func TestNamedNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run iptables-save")
	}
	s, err := Take(Options{NamedNetns: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Netns == nil {
		t.Error("Netns is nil though asked for")
	}
}

// The dummy link's ownership marker is netredirect's, copied to avoid an
// import cycle with netredirect's tests.
func TestOwnedLinkAliasIsNetredirects(t *testing.T) {
	if ownedLinkAlias != netredirect.LinkAlias {
		t.Fatalf("ownedLinkAlias %q, netredirect.LinkAlias %q", ownedLinkAlias, netredirect.LinkAlias)
	}
}

package callers

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imds-shim/imds-shim/pkg/internal/nstest"
)

// BenchmarkIdentify measures Identify on one accepted connection that came
// through the DNAT, with N other TCP sockets open in the namespace (the
// exact lookup must not grow with them). Caches are warm, as they are for
// every caller but the first of a cgroup; each iteration does the two
// getsockopt-and-netlink round trips a new connection costs.
func BenchmarkIdentify(b *testing.B) {
	for _, n := range []int{0, 1000, 8000} {
		b.Run(fmt.Sprintf("sockets=%d", n), func(b *testing.B) {
			benchIdentify(b, n)
		})
	}
}

func benchIdentify(b *testing.B, n int) {
	e := setupNet(b)
	// n sockets: n/2 loopback connections, both ends kept open.
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer other.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n / 2 {
		c, err := net.Dial("tcp4", other.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := other.Accept()
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c, s)
	}
	client, err := net.Dial("tcp4", "169.254.169.254:80")
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	conn, err := e.ln4.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if c := e.id.Identify(conn); c.Kind != Host {
		b.Fatalf("caller = %+v", c)
	}
	for b.Loop() {
		e.id.Identify(conn)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "µs/op")
}

// BenchmarkCgroupWalk measures the walk a cgroup cache miss costs, over this
// host's hierarchy plus n extra cgroups.
func BenchmarkCgroupWalk(b *testing.B) {
	l := DetectLayout()
	if l.Root == "" {
		b.Skip("no cgroup2 hierarchy")
	}
	nstest.RequireRootNetns(b)
	for _, n := range []int{0, 1000} {
		b.Run(fmt.Sprintf("extra=%d", n), func(b *testing.B) {
			top := filepath.Join(l.Root, fmt.Sprintf("imds-shim-h3bench-%08x", rand.Uint32()))
			if err := os.Mkdir(top, 0o755); err != nil {
				b.Fatal(err)
			}
			defer os.Remove(top)
			for i := range n {
				d := filepath.Join(top, strconv.Itoa(i))
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
				defer os.Remove(d)
			}
			var paths map[uint64]string
			for b.Loop() {
				var err error
				if paths, err = walkCgroups(l.Root, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(paths)), "cgroups")
		})
	}
}

// BenchmarkIdentifySource measures a caller from another network namespace:
// its socket is not found, and a route lookup finds its address not local.
func BenchmarkIdentifySource(b *testing.B) {
	e := setupNet(b)
	run(b, "ip", "link", "add", "h3bench0", "type", "veth", "peer", "name", "h3bench1")
	defer run(b, "ip", "link", "del", "h3bench0")
	run(b, "ip", "addr", "add", "10.213.1.1/24", "dev", "h3bench0")
	run(b, "ip", "link", "set", "h3bench0", "up")
	remote := netip.MustParseAddrPort("10.213.1.2:41000")
	dst := netip.MustParseAddrPort("169.254.169.254:80")
	if c := e.id.identify(remote, dst); c.Kind != Source {
		b.Fatalf("caller = %+v", c)
	}
	for b.Loop() {
		e.id.identify(remote, dst)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "µs/op")
}

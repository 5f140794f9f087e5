package callers

import (
	"fmt"
	"net"
	"testing"
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

package daemon_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTokenAcrossSourcePortRemap: a connection made straight to the
// listener (as the daemon's own probe of it makes, for /healthz and the
// watchdog) holds the reply tuple that a caller's connection through the
// redirect from the same source port would have, so netfilter gives the
// caller's connection another source port. The caller is still itself: the
// token it gets on that connection works on its next one, and its
// credentials are served.
func TestTokenAcrossSourcePortRemap(t *testing.T) {
	e := newEnv(t)
	d := e.serve(e.writeConfig("app", ""))
	e.waitNote("READY=1", d)
	defer func() {
		// Stop it whole, so that a failure leaves nothing behind for the
		// next test.
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.wait(t)
	}()

	reuse := func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		return serr
	}
	var local *net.TCPAddr
	var direct net.Conn
	for try := 0; direct == nil; try++ {
		local = &net.TCPAddr{IP: net.IPv4(169, 254, 169, 254), Port: 40000 + rand.IntN(20000)}
		var err error
		direct, err = (&net.Dialer{LocalAddr: local, Control: reuse}).Dial("tcp4", "169.254.169.254:254")
		if err != nil && try == 10 {
			t.Fatal(err)
		}
	}
	defer direct.Close()

	// The token, through the redirect, from the same address and port.
	dialer := &net.Dialer{LocalAddr: local, Control: reuse}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp4", addr)
		}}}
	tok := imdsTokenWith(t, client)
	// The clash happened: conntrack gave the connection to port 80 from
	// local another port on the listener's side.
	ct, err := os.ReadFile("/proc/net/nf_conntrack")
	if err != nil {
		t.Skipf("cannot read conntrack to see the remap: %v", err)
	}
	remapped := false
	for _, l := range strings.Split(string(ct), "\n") {
		if strings.Contains(l, fmt.Sprintf(" sport=%d dport=80 ", local.Port)) && strings.Fields(l[strings.LastIndex(l, "sport="):])[1] != fmt.Sprintf("dport=%d", local.Port) {
			remapped = true
		}
	}
	if !remapped {
		t.Fatalf("no source port remap for %s in conntrack; the test proves nothing:\n%s", local, ct)
	}

	// The credentials, on an ordinary connection, with that token.
	if code, body := imdsGetWith(t, tok, "/latest/meta-data/iam/security-credentials/app"); code != 200 {
		t.Fatalf("credentials with the token got on the remapped connection: %d %s", code, body)
	}
}

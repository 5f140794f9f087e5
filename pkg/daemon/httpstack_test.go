package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connEvents records what the server's ConnObserver hears, in order.
type connEvents chan string

func (c connEvents) ConnectionOpened()              { c <- "opened" }
func (c connEvents) ConnectionClosed(reason string) { c <- "closed:" + reason }

// next waits for the next event; the test's own deadline is the only bound.
func (c connEvents) next(t *testing.T) string {
	t.Helper()
	select {
	case ev := <-c:
		return ev
	case <-t.Context().Done():
		t.Fatal("test ended before the next connection event")
		return ""
	}
}

func (c connEvents) want(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := c.next(t); got != w {
			t.Fatalf("connection event %q, want %q", got, w)
		}
	}
}

// serveStack runs h in NewHTTPServer with l on a real loopback socket.
func serveStack(t *testing.T, h http.Handler, l Limits, o HTTPOptions) (string, connEvents, *HTTPServer) {
	t.Helper()
	ev := make(connEvents, 100)
	o.Observer = ev
	s := NewHTTPServer(h, l, o)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), ev, s
}

// Short limits make every test quick; none asserts a duration, each waits
// for the server's own close event.
var testLimits = Limits{HeaderTimeout: 50 * time.Millisecond, IdleTimeout: 50 * time.Millisecond,
	WriteTimeout: 100 * time.Millisecond, MaxHeaderBytes: 4 << 10, MaxConns: 8}

func long(l Limits) Limits {
	l.HeaderTimeout, l.IdleTimeout, l.WriteTimeout = time.Minute, time.Minute, time.Minute
	return l
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawGet(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// expectClosed reads until the server closes c.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Errorf("reading until close: %v", err)
	}
}

func TestStackHeaderTimeout(t *testing.T) {
	l := testLimits
	l.IdleTimeout, l.WriteTimeout = time.Minute, time.Minute
	addr, ev, _ := serveStack(t, okHandler, l, HTTPOptions{})
	// A new connection that never finishes its header.
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	ev.want(t, "opened", "closed:"+ClosedHeaderTimeout)
	expectClosed(t, c)
	// A reused connection gets the same bound on its next header.
	c = dial(t, addr)
	br := bufio.NewReader(c)
	if resp := rawGet(t, c, br); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	ev.want(t, "opened", "closed:"+ClosedHeaderTimeout)
}

func TestStackIdleTimeout(t *testing.T) {
	l := testLimits
	l.HeaderTimeout, l.WriteTimeout = time.Minute, time.Minute
	addr, ev, _ := serveStack(t, okHandler, l, HTTPOptions{})
	c := dial(t, addr)
	rawGet(t, c, bufio.NewReader(c))
	ev.want(t, "opened", "closed:"+ClosedIdleTimeout)
	expectClosed(t, c)
}

// A client that asks and never reads its answers holds the connection no
// longer than WriteTimeout.
func TestStackSlowReader(t *testing.T) {
	l := testLimits
	l.HeaderTimeout, l.IdleTimeout = time.Minute, time.Minute
	big := strings.Repeat("x", 1<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := io.WriteString(w, big); err != nil {
				return
			}
		}
	})
	addr, ev, _ := serveStack(t, h, l, HTTPOptions{})
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	ev.want(t, "opened", "closed:"+ClosedWriteTimeout)
}

func TestStackEndedAndShutdown(t *testing.T) {
	addr, ev, s := serveStack(t, okHandler, long(testLimits), HTTPOptions{})
	c := dial(t, addr)
	rawGet(t, c, bufio.NewReader(c))
	c.Close()
	ev.want(t, "opened", "closed:"+ClosedEnded)
	c = dial(t, addr)
	rawGet(t, c, bufio.NewReader(c)) // idle now
	ev.want(t, "opened")
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev.want(t, "closed:"+ClosedShutdown)
}

// At the cap, Accept waits: the next connection is taken only once one
// closes, so "opened" for it comes after that close.
func TestStackConnectionCap(t *testing.T) {
	l := long(testLimits)
	l.MaxConns = 2
	addr, ev, _ := serveStack(t, okHandler, l, HTTPOptions{})
	c1, c2 := dial(t, addr), dial(t, addr)
	rawGet(t, c1, bufio.NewReader(c1))
	rawGet(t, c2, bufio.NewReader(c2))
	ev.want(t, "opened", "opened")
	c3 := dial(t, addr) // completes in the kernel's backlog
	io.WriteString(c3, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c1.Close()
	ev.want(t, "closed:"+ClosedEnded, "opened")
	resp, err := http.ReadResponse(bufio.NewReader(c3), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("third connection: %v %v", resp, err)
	}
}

// Expect: 100-continue never hangs a request, whether the handler reads
// the body, closes it unread, or ignores it.
func TestStackExpectContinue(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"reads":   func(w http.ResponseWriter, r *http.Request) { b, _ := io.ReadAll(r.Body); w.Write(b) },
		"closes":  func(w http.ResponseWriter, r *http.Request) { defer r.Body.Close(); io.WriteString(w, "no") },
		"ignores": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusExpectationFailed) },
	} {
		t.Run(name, func(t *testing.T) {
			addr, ev, _ := serveStack(t, h, long(testLimits), HTTPOptions{})
			c := dial(t, addr)
			// A guard only: a hang fails here instead of at the
			// test binary's timeout.
			c.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			io.WriteString(c, "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == http.StatusContinue {
				io.WriteString(c, "hello")
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if name == "reads" && (resp.StatusCode != 200 || string(b) != "hello") {
				t.Errorf("reading handler: %d %q", resp.StatusCode, b)
			}
			if name != "reads" {
				// The server lets go of the connection at once, not
				// after waiting for a body never sent.
				ev.want(t, "opened", "closed:"+ClosedEnded)
			}
		})
	}
}

// A request with a body that no handler reads is answered at once and its
// connection closed, however slowly the body would come; a handler that
// reads a body gets HeaderTimeout for it, from its first read.
func TestStackBodies(t *testing.T) {
	l := testLimits
	l.IdleTimeout, l.WriteTimeout = time.Minute, time.Minute
	for name, tc := range map[string]struct {
		h      http.HandlerFunc
		status int
		closed string
	}{
		"ignored": {okHandler, 200, ClosedEnded},
		"read":    {func(w http.ResponseWriter, r *http.Request) { _, err := io.ReadAll(r.Body); fmt.Fprint(w, err) }, 200, ClosedHeaderTimeout},
	} {
		t.Run(name, func(t *testing.T) {
			addr, ev, _ := serveStack(t, tc.h, l, HTTPOptions{})
			c := dial(t, addr)
			c.SetDeadline(time.Now().Add(10 * time.Second)) // a guard only
			br := bufio.NewReader(c)
			// 2 of 10 bytes, then nothing: a slow client.
			io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !resp.Close {
				t.Errorf("status %d, close %v, want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			if name == "read" && !strings.Contains(string(b), "timeout") {
				t.Errorf("the reading handler got %q, want a timeout error", b)
			}
			ev.want(t, "opened", "closed:"+tc.closed)
			expectClosed(t, c)
		})
	}
	// A request without a body keeps its connection.
	addr, ev, _ := serveStack(t, okHandler, long(l), HTTPOptions{})
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for range 2 {
		if resp := rawGet(t, c, br); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("GET: status %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	ev.want(t, "opened")
}

// ConnContext gets the accepted socket, once per connection, and can read
// its options (as caller identification does with getsockopt).
func TestStackConnContext(t *testing.T) {
	type key struct{}
	calls := make(chan string, 10)
	o := HTTPOptions{ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
		c, ok := nc.(*Conn)
		if !ok {
			calls <- fmt.Sprintf("got %T", nc)
			return ctx
		}
		if _, ok := c.NetConn().(*net.TCPConn); !ok {
			calls <- fmt.Sprintf("NetConn is %T", c.NetConn())
		}
		rc, err := c.SyscallConn()
		var proto int
		if err == nil {
			rc.Control(func(fd uintptr) { proto, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
		}
		calls <- fmt.Sprintf("proto %d %v", proto, err)
		return context.WithValue(ctx, key{}, nc.RemoteAddr().String())
	}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Context().Value(key{}).(string))
	})
	addr, _, _ := serveStack(t, h, long(testLimits), o)
	c := dial(t, addr)
	br := bufio.NewReader(c)
	for range 3 {
		rawGet(t, c, br)
	}
	if got := <-calls; got != fmt.Sprintf("proto %d <nil>", unix.IPPROTO_TCP) {
		t.Errorf("ConnContext: %s", got)
	}
	if len(calls) != 0 {
		t.Errorf("ConnContext called %d more times for one connection", len(calls))
	}
}

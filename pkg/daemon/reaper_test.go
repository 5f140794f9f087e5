package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"
)

// The reaper's decisions, on its own clock: each state has its own limit,
// a state change restarts the clock, and closed or hijacked connections
// are forgotten.
func TestConnReaperLimits(t *testing.T) {
	r := newConnReaper(slog.New(slog.DiscardHandler), 5*time.Second, 90*time.Second, 30*time.Second, time.Second)
	t0 := r.now.Load()
	at := func(d time.Duration) int64 { return t0 + int64(d) }
	conns := map[string]net.Conn{}
	closed := map[string]bool{}
	for _, name := range []string{"silent", "busy", "idle", "stuck", "gone", "hijacked"} {
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		conns[name] = c
		go func() { // a closed pipe end makes the peer's read fail
			_, _ = io.Copy(io.Discard, peer)
		}()
		r.ConnState(c, http.StateNew)
	}
	set := func(d time.Duration, name string, s http.ConnState) {
		r.now.Store(at(d))
		r.ConnState(conns[name], s)
	}
	reap := func(d time.Duration) string {
		r.reap(at(d))
		var open []string
		for name, c := range conns {
			if closed[name] {
				continue
			}
			// Writing to a closed pipe end fails at once; an open one
			// would block, so probe with a deadline.
			_ = c.SetWriteDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Write([]byte{0}); err == io.ErrClosedPipe {
				closed[name] = true
				continue
			}
			open = append(open, name)
		}
		slices.Sort(open)
		return fmt.Sprintf("%v open, %d tracked", open, r.tracked())
	}
	set(1*time.Second, "busy", http.StateActive)
	set(2*time.Second, "idle", http.StateActive)
	set(2*time.Second, "stuck", http.StateActive)
	set(3*time.Second, "idle", http.StateIdle)
	set(3*time.Second, "gone", http.StateClosed)
	set(3*time.Second, "hijacked", http.StateHijacked)

	steps := []struct {
		at   time.Duration
		do   func()
		want string
	}{
		{4 * time.Second, nil, "[busy gone hijacked idle silent stuck] open, 4 tracked"},
		// "silent" never completed a header: closed after 5 s.
		{5500 * time.Millisecond, nil, "[busy gone hijacked idle stuck] open, 3 tracked"},
		// "busy" goes idle and active again: its clock restarts each time.
		{25 * time.Second, func() { set(20*time.Second, "busy", http.StateIdle) }, "[busy gone hijacked idle stuck] open, 3 tracked"},
		{31 * time.Second, func() { set(30*time.Second, "busy", http.StateActive) }, "[busy gone hijacked idle stuck] open, 3 tracked"},
		// "stuck" has been answering one request for over 30 s.
		{32500 * time.Millisecond, nil, "[busy gone hijacked idle] open, 2 tracked"},
		{59 * time.Second, func() { set(40*time.Second, "busy", http.StateIdle) }, "[busy gone hijacked idle] open, 2 tracked"},
		// "idle" has waited 90 s for a next request.
		{93500 * time.Millisecond, nil, "[busy gone hijacked] open, 1 tracked"},
		{131 * time.Second, nil, "[gone hijacked] open, 0 tracked"},
		// Forgotten connections are never closed by the reaper.
		{time.Hour, nil, "[gone hijacked] open, 0 tracked"},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		if got := reap(s.at); got != s.want {
			t.Errorf("at %v: %s, want %s", s.at, got, s.want)
		}
	}
}

// A real http.Server with the reaper on short limits: a client trickling
// its first header, a silent one and an idle keep-alive one are cut off; a
// client whose requests keep coming stays connected well past every limit;
// and the reaper forgets every connection once it is closed.
func TestConnReaperServer(t *testing.T) {
	const limit = 300 * time.Millisecond
	r := newConnReaper(slog.New(slog.DiscardHandler), limit, 2*limit, limit, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go r.Run(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ConnState: r.ConnState, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/slow" {
			time.Sleep(10 * limit)
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reads until the server closes c, or fails the test.
	closedWithin := func(name string, c net.Conn, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("%s: not closed by the server within %v: %v", name, d, err)
		}
	}
	get := func(br *bufio.Reader, c net.Conn, path string) error {
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}

	silent := dial()
	trickle := dial()
	go func() {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ") {
			if _, err := trickle.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(limit / 10)
		}
	}()
	idle := dial()
	if err := get(bufio.NewReader(idle), idle, "/"); err != nil {
		t.Fatal(err)
	}
	stuck := dial()
	stuckBR := bufio.NewReader(stuck)
	stuckErr := make(chan error, 1)
	go func() { stuckErr <- get(stuckBR, stuck, "/slow") }()

	// A client that keeps asking stays connected for 10 limits.
	busy := dial()
	br := bufio.NewReader(busy)
	for deadline := time.Now().Add(10 * limit); time.Now().Before(deadline); {
		if err := get(br, busy, "/"); err != nil {
			t.Fatalf("a busy keep-alive client was cut off: %v", err)
		}
		time.Sleep(limit / 5)
	}
	closedWithin("silent", silent, 5*time.Second)
	closedWithin("trickling header", trickle, 5*time.Second)
	closedWithin("idle keep-alive", idle, 5*time.Second)
	if err := <-stuckErr; err == nil {
		t.Error("a request handled for longer than the active limit was answered")
	}
	busy.Close()
	for deadline := time.Now().Add(5 * time.Second); r.tracked() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still tracked after all closed", r.tracked())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

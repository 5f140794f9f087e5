package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

// echo answers with the method and path, a few headers the way the IMDS
// handler sets them, and on HEAD the Content-Length a GET would have.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	defer r.Body.Close() // as handlers do; it must not read a body to its end
	body := r.Method + " " + r.URL.Path + " host=" + r.Host
	h := w.Header()
	h["Server"] = []string{"EC2ws"}
	h["Content-Type"] = []string{"text/plain"}
	if r.Method == http.MethodHead && r.URL.Path != "/nolength" {
		h["Content-Length"] = []string{fmt.Sprint(len(body))}
	}
	if r.URL.Path == "/close" {
		h["Connection"] = []string{"close"}
	}
	if r.URL.Path == "/teapot" {
		w.WriteHeader(http.StatusTeapot)
	}
	_, _ = io.WriteString(w, body)
})

// listen listens on a free loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveOn starts s on a loopback listener, closes it with the test, and
// returns its address.
func serveOn(t *testing.T, s *Server) string {
	t.Helper()
	ln := listen(t)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}

// serveBoth starts the handler in this package's server and in
// net/http's, and returns their addresses.
func serveBoth(t *testing.T, h http.Handler) (ours, theirs string) {
	t.Helper()
	b := listen(t)
	hs := &http.Server{Handler: h, MaxHeaderBytes: DefaultMaxHeaderBytes}
	go func() { _ = hs.Serve(b) }()
	t.Cleanup(func() { hs.Close() })
	return serveOn(t, &Server{Handler: h}), b.Addr().String()
}

// exchange sends raw on a new connection and describes, one line per
// response, what came back, then whether the server closed the
// connection.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = io.WriteString(c, raw) }()
	br := bufio.NewReader(c)
	var out []string
	method := strings.SplitN(raw, " ", 2)[0]
	wait := 3 * time.Second // for the first response; then, is there more?
	for {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		wait = 300 * time.Millisecond
		if _, err := br.Peek(1); err != nil {
			if isTimeoutErr(err) {
				out = append(out, "open")
			} else {
				out = append(out, "closed")
			}
			break
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			out = append(out, "read error: "+err.Error())
			break
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			out = append(out, "body error: "+err.Error())
			break
		}
		line := fmt.Sprintf("%d close=%v", resp.StatusCode, resp.Close)
		if resp.StatusCode < 400 { // error bodies and their framing are each server's own
			line += fmt.Sprintf(" cl=%s te=%v ct=%s body=%q", resp.Header.Get("Content-Length"), resp.TransferEncoding, resp.Header.Get("Content-Type"), body)
		}
		out = append(out, line)
		if resp.Close {
			break // whether the socket is closed now or a moment later is not the client's concern
		}
	}
	return strings.Join(out, "\n")
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The server answers like net/http.Server on the wire: the same responses,
// framing and keep-alive decisions for well-formed requests, pipelining,
// bodies, HTTP/1.0, and the protocol errors. Where it answers differently
// on purpose, the row says so.
func TestConformanceWithNetHTTP(t *testing.T) {
	ours, theirs := serveBoth(t, echo)
	big := strings.Repeat("x", 300<<10)
	for _, tc := range []struct {
		name, raw string
		// differ, when set, is what this server answers where net/http
		// answers otherwise, and why.
		differ, why string
	}{
		{name: "get", raw: "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"},
		{name: "head", raw: "HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "pipelined", raw: "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "head then get", raw: "HEAD /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "head, length from what was written", raw: "HEAD /nolength HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "handler closes", raw: "GET /close HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "connection close", raw: "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		{name: "http/1.0", raw: "GET /a HTTP/1.0\r\n\r\n"},
		{name: "http/1.0 keep-alive", raw: "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{name: "status", raw: "GET /teapot HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "absolute form", raw: "GET http://169.254.169.254/latest HTTP/1.1\r\nHost: other\r\n\r\n"},
		{name: "put with body", raw: "PUT /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "chunked body", raw: "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "unread large body", raw: "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big},
		{name: "expect continue", raw: "PUT /t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"},
		{name: "expect other", raw: "GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n"},
		{name: "no host", raw: "GET / HTTP/1.1\r\n\r\n"},
		{name: "host with space", raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{name: "two hosts", raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
		{name: "host with userinfo", raw: "GET / HTTP/1.1\r\nHost: 169.254.169.254:80@evil.example\r\n\r\n"},
		{name: "host with path", raw: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
		{name: "ipv6 host", raw: "GET / HTTP/1.1\r\nHost: [fd00:ec2::254]:80\r\n\r\n"},
		{name: "two lengths", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"},
		{name: "length and chunked", raw: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"},
		{name: "absolute form without host", raw: "GET http://169.254.169.254/latest HTTP/1.1\r\n\r\n",
			differ: "200 close=false cl=32 te=[] ct=text/plain body=\"GET /latest host=169.254.169.254\"\nopen",
			why:    "http.ReadRequest drops the Host header before the server sees it; the URL's host serves"},
		{name: "garbage", raw: "GARBAGE\r\n\r\n"},
		{name: "bad header name", raw: "GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n"},
		{name: "bad version", raw: "GET / HTTP/9\r\nHost: h\r\n\r\n"},
		{name: "header too large", raw: "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("b", 2*DefaultMaxHeaderBytes) + "\r\n\r\n"},
		{name: "http/2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			differ: "505 close=true", why: "no HTTP/2 here; net/http hands the preface to its HTTP/2 server"},
		{name: "unsupported transfer encoding", raw: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
			differ: "400 close=true", why: "net/http answers 501; either way the request is refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, want := exchange(t, ours, tc.raw), exchange(t, theirs, tc.raw)
			if tc.differ != "" {
				if got != tc.differ {
					t.Errorf("got:\n%s\nwant (%s):\n%s", got, tc.why, tc.differ)
				}
				return
			}
			if got != want {
				t.Errorf("httpserver:\n%s\nnet/http:\n%s", got, want)
			}
		})
	}
}

// A response's bytes on the wire: sorted handler headers, Date, an exact
// length, no Connection header on a kept HTTP/1.1 connection.
func TestResponseBytes(t *testing.T) {
	var w response
	w.header = http.Header{}
	w.reset(false)
	w.Header()["X-Aws-Ec2-Metadata-Token-Ttl-Seconds"] = []string{"21600"}
	w.Header()["Server"] = []string{"EC2ws"}
	w.Header()["Content-Type"] = []string{"text/plain"}
	w.Header()["Accept-Ranges"] = []string{"none"}
	w.Header()["X-Injected"] = []string{"a\r\nSet-Cookie: x"}
	w.Header()["Bad Name"] = []string{"dropped"}
	_, _ = w.Write([]byte("body"))
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	req := &http.Request{Method: "GET", ProtoMajor: 1, ProtoMinor: 1}
	w.writeTo(bw, req, true, "Date: Sat, 28 Nov 2026 14:00:00 GMT\r\n")
	_ = bw.Flush()
	want := "HTTP/1.1 200 OK\r\nAccept-Ranges: none\r\nContent-Type: text/plain\r\nServer: EC2ws\r\n" +
		"X-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600\r\nX-Injected: a  Set-Cookie: x\r\n" +
		"Date: Sat, 28 Nov 2026 14:00:00 GMT\r\nContent-Length: 4\r\n\r\nbody"
	if b.String() != want {
		t.Errorf("got:\n%q\nwant:\n%q", b.String(), want)
	}
}

// The reaper's decisions, on its own clock: each state has its own limit,
// a state change restarts the clock, and closed connections are
// forgotten.
func TestReapLimits(t *testing.T) {
	s := &Server{HeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second, ActiveTimeout: 30 * time.Second}
	s.conns = map[*conn]connClock{}
	t0 := time.Now().UnixNano()
	at := func(d time.Duration) int64 { return t0 + int64(d) }
	conns := map[string]*conn{}
	for _, name := range []string{"silent", "busy", "idle", "stuck", "gone"} {
		c, peer := net.Pipe()
		t.Cleanup(func() { c.Close(); peer.Close() })
		go func() { _, _ = io.Copy(io.Discard, peer) }()
		conns[name] = &conn{s: s, rwc: c, remote: name}
		s.conns[conns[name]] = connClock{state: stateNew, since: t0}
	}
	set := func(d time.Duration, name string, st connState) {
		s.now.Store(at(d))
		s.setState(conns[name], st)
	}
	closed := map[string]bool{}
	reap := func(d time.Duration) string {
		s.reap(at(d))
		var open []string
		for _, name := range []string{"busy", "gone", "idle", "silent", "stuck"} {
			if closed[name] {
				continue
			}
			if _, err := conns[name].rwc.Write([]byte{0}); errors.Is(err, io.ErrClosedPipe) {
				closed[name] = true
				continue
			}
			open = append(open, name)
		}
		return fmt.Sprintf("%v open, %d tracked", open, s.Tracked())
	}
	set(1*time.Second, "busy", stateActive)
	set(2*time.Second, "idle", stateActive)
	set(2*time.Second, "stuck", stateActive)
	set(3*time.Second, "idle", stateIdle)
	s.forget(conns["gone"])
	set(3*time.Second, "gone", stateIdle) // a late state change does not bring it back

	for _, step := range []struct {
		at   time.Duration
		do   func()
		want string
	}{
		{4 * time.Second, nil, "[busy gone idle silent stuck] open, 4 tracked"},
		// "silent" never completed a header: closed after 5 s.
		{5500 * time.Millisecond, nil, "[busy gone idle stuck] open, 3 tracked"},
		// "busy" goes idle and active again: its clock restarts each time.
		{25 * time.Second, func() { set(20*time.Second, "busy", stateIdle) }, "[busy gone idle stuck] open, 3 tracked"},
		{31 * time.Second, func() { set(30*time.Second, "busy", stateActive) }, "[busy gone idle stuck] open, 3 tracked"},
		// "stuck" has been answering one request for over 30 s.
		{32500 * time.Millisecond, nil, "[busy gone idle] open, 2 tracked"},
		{59 * time.Second, func() { set(40*time.Second, "busy", stateIdle) }, "[busy gone idle] open, 2 tracked"},
		// "idle" has waited 90 s for a next request.
		{93500 * time.Millisecond, nil, "[busy gone] open, 1 tracked"},
		{131 * time.Second, nil, "[gone] open, 0 tracked"},
		{time.Hour, nil, "[gone] open, 0 tracked"},
	} {
		if step.do != nil {
			step.do()
		}
		if got := reap(step.at); got != step.want {
			t.Errorf("at %v: %s, want %s", step.at, got, step.want)
		}
	}
}

// connEvents records what an Observer hears.
type connEvents struct {
	mu     sync.Mutex
	opened int
	closed map[string]int
}

func (e *connEvents) ConnectionOpened() { e.mu.Lock(); e.opened++; e.mu.Unlock() }
func (e *connEvents) ConnectionClosed(reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed == nil {
		e.closed = map[string]int{}
	}
	e.closed[reason]++
}

// String says how many connections opened, how many are still open, and
// why the others closed.
func (e *connEvents) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, v := range e.closed {
		n += v
	}
	return fmt.Sprintf("opened %d, %d still open; closed %v", e.opened, e.opened-n, e.closed)
}

// On short limits: a client trickling its first header, a silent one, an
// idle keep-alive one and one whose request takes too long are cut off; a
// client whose requests keep coming stays connected well past every
// limit; the server forgets every connection once it is closed; and its
// Observer hears why each one ended.
func TestLimitsOnTheWire(t *testing.T) {
	const limit = 300 * time.Millisecond
	release := make(chan struct{})
	events := &connEvents{}
	s := &Server{HeaderTimeout: limit, IdleTimeout: 2 * limit, ActiveTimeout: limit, Tick: 20 * time.Millisecond, Observer: events,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-release
			}
			_, _ = io.WriteString(w, "ok")
		})}
	addr := serveOn(t, s)
	closedWithin := func(name string, c *testConn, d time.Duration) {
		t.Helper()
		_ = c.c.SetReadDeadline(time.Now().Add(d))
		if _, err := io.Copy(io.Discard, c.br); err != nil {
			t.Errorf("%s: not closed by the server within %v: %v", name, d, err)
		}
	}

	silent := exchangeConn(t, addr)
	trickle := exchangeConn(t, addr)
	go func() {
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ") {
			if _, err := trickle.c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(limit / 10)
		}
	}()
	idle := exchangeConn(t, addr)
	idle.get(t, "/")
	stuck := exchangeConn(t, addr)
	stuckErr := make(chan error, 1)
	go func() { _, err := stuck.do("/slow"); stuckErr <- err }()

	busy := exchangeConn(t, addr)
	for deadline := time.Now().Add(10 * limit); time.Now().Before(deadline); {
		if _, err := busy.do("/"); err != nil {
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
	close(release) // the stuck handler returns, and its connection's goroutine ends
	busy.c.Close()
	for deadline := time.Now().Add(5 * time.Second); s.Tracked() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still tracked after all closed", s.Tracked())
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := "opened 5, 0 still open; closed map[active_timeout:1 ended:1 header_timeout:2 idle_timeout:1]"
	for deadline := time.Now().Add(5 * time.Second); events.String() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("observer heard %s, want %s", events, want)
		}
	}
	// Shutdown closes an idle connection as such.
	late := &connEvents{}
	s2 := &Server{Handler: echo, Observer: late}
	exchangeConn(t, serveOn(t, s2)).get(t, "/")
	if err := s2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	want = "opened 1, 0 still open; closed map[shutdown:1]"
	for deadline := time.Now().Add(5 * time.Second); late.String() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("observer heard %s, want %s", late, want)
		}
	}
}

// Shutdown closes idle connections at once, lets a request in flight
// finish with Connection: close, makes Serve return ErrServerClosed, and
// waits for the request; with its context done first it says so, and
// Close ends the rest.
func TestShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})}
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()
	idle := exchangeConn(t, addr)
	idle.get(t, "/")
	slow := exchangeConn(t, addr)
	slowResp := make(chan *http.Response, 1)
	go func() { slowResp <- slow.send(t, "/slow") }()
	<-entered

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a request in flight past its deadline = %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if _, err := idle.br.Peek(1); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection not closed: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	close(release)
	resp := <-slowResp
	if resp == nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request in flight: %+v, want 200 with Connection: close", resp)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown after the request finished = %v", err)
	}
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

// A handler that panics loses its connection, not the server, and the
// panic is logged.
func TestHandlerPanic(t *testing.T) {
	var logs syncbuf.Buffer
	s := &Server{Log: slog.New(slog.NewTextHandler(&logs, nil)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/panic" {
				panic("boom")
			}
			_, _ = io.WriteString(w, "ok")
		})}
	addr := serveOn(t, s)
	if got := exchange(t, addr, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\n"); got != "closed" {
		t.Errorf("after a panic: %s", got)
	}
	if got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); !strings.HasPrefix(got, "200") {
		t.Errorf("next connection: %s", got)
	}
	if !strings.Contains(logs.String(), "panic serving a request") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged: %s", logs.String())
	}
}

// One server serves several listeners at once, as the daemon's does
// across a reload.
func TestServeSeveralListeners(t *testing.T) {
	s := &Server{Handler: echo}
	t.Cleanup(func() { s.Close() })
	var wg sync.WaitGroup
	for range 3 {
		ln := listen(t)
		wg.Go(func() { _ = s.Serve(ln) })
		if got := exchange(t, ln.Addr().String(), "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "200") {
			t.Errorf("%s: %s", ln.Addr(), got)
		}
	}
	s.Close()
	wg.Wait()
}

type testConn struct {
	c  net.Conn
	br *bufio.Reader
}

func exchangeConn(t *testing.T, addr string) *testConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &testConn{c: c, br: bufio.NewReader(c)}
}

// do sends a GET for path and reads the whole response.
func (tc *testConn) do(path string) (*http.Response, error) {
	if _, err := io.WriteString(tc.c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(tc.br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, err
}

// send is do, failing the test (from any goroutine) on an error.
func (tc *testConn) send(t *testing.T, path string) *http.Response {
	resp, err := tc.do(path)
	if err != nil {
		t.Error(err)
		return nil
	}
	return resp
}

func (tc *testConn) get(t *testing.T, path string) {
	t.Helper()
	if resp := tc.send(t, path); resp == nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %+v", path, resp)
	}
}

// A handler that closes a request body does not make the server read it:
// a client that declared 50 MB and sent 1 KB still gets its answer, and
// the connection is closed after it.
func TestClosedBodyIsNotRead(t *testing.T) {
	ours, _ := serveBoth(t, echo)
	c, err := net.Dial("tcp", ours)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 52428800\r\n\r\n"+strings.Repeat("x", 1024))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body is still declared outstanding: %v", err)
	}
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("status %d, close %v; want 200 and Connection: close", resp.StatusCode, resp.Close)
	}
}

// Shutdown waits for a handler still running on a connection the reaper
// has already closed, and Serve after Shutdown closes the listener it is
// given.
func TestShutdownWaitsForReapedHandlers(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := &Server{ActiveTimeout: 50 * time.Millisecond, Tick: 10 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
		})}
	c := exchangeConn(t, serveOn(t, s))
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-entered
	for deadline := time.Now().Add(5 * time.Second); s.Tracked() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reaper did not close the connection")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a handler still running = %v, want its deadline", err)
	}
	close(release)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown after the handler returned = %v", err)
	}
	late := listen(t)
	if err := s.Serve(late); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
	if c, err := net.DialTimeout("tcp", late.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("Serve after Shutdown left its listener open")
	}
}

// A connection keeps its body buffer between requests only while it is
// small: idle connections do not hold large responses' memory.
func TestResponseBufferIsBounded(t *testing.T) {
	w := response{header: http.Header{}}
	w.reset(false)
	_, _ = w.Write(make([]byte, 1500))
	w.reset(false)
	if cap(w.body) < 1500 {
		t.Errorf("a credential-sized buffer was dropped (cap %d)", cap(w.body))
	}
	_, _ = w.Write(make([]byte, 20<<10))
	w.reset(false)
	if cap(w.body) != 0 {
		t.Errorf("a 20 KiB buffer is kept between requests (cap %d)", cap(w.body))
	}
}

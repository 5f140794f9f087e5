package httpserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the Server's limits.
const (
	DefaultMaxHeaderBytes = 16 << 10
	DefaultHeaderTimeout  = 5 * time.Second
	DefaultIdleTimeout    = 90 * time.Second
	DefaultActiveTimeout  = 30 * time.Second
	DefaultTick           = time.Second
	// maxDrain is the most of an unread request body discarded to keep a
	// connection alive; a larger one closes it after the response.
	maxDrain = 64 << 10
)

// Server serves HTTP/1.1 to Handler on every listener given to Serve.
// Set its fields before the first Serve; the zero value of each limit is
// its default.
type Server struct {
	Handler http.Handler
	// BaseContext is the parent of every request's context; nil means
	// context.Background(). Requests' contexts carry
	// http.LocalAddrContextKey, and are not canceled when a client goes
	// away: handlers here answer at once.
	BaseContext context.Context
	// MaxHeaderBytes bounds a request's line and header fields.
	MaxHeaderBytes int
	// HeaderTimeout bounds a new connection until its first request's
	// header is complete; IdleTimeout a keep-alive connection between
	// requests (a next request's header still arriving included);
	// ActiveTimeout handling and answering one request, which includes a
	// client not reading its response. Each is enforced to within Tick.
	HeaderTimeout, IdleTimeout, ActiveTimeout, Tick time.Duration
	// Log gets accept errors and handler panics (error level) and
	// connections closed for a limit or a malformed request (debug).
	Log *slog.Logger
	// Observer, if set, hears of every connection opened and closed.
	Observer Observer

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]connClock
	closed    atomic.Bool // Shutdown or Close called
	started   bool        // the reaper runs
	stop      chan struct{}
	epoch     time.Time    // the clock's zero, read once with its monotonic reading
	now       atomic.Int64 // coarse clock: nanoseconds since epoch, advanced every tick
	live      atomic.Int64 // connection goroutines still running
	date      atomic.Pointer[dateLine]
}

// Observer hears about connections, once when each opens and once when it
// closes, from connection goroutines and the reaper concurrently.
type Observer interface {
	ConnectionOpened()
	// ConnectionClosed gives one of the Closed* reasons.
	ConnectionClosed(reason string)
}

// Why a connection was closed.
const (
	ClosedEnded         = "ended"          // by the client, or by its request (Connection: close, HTTP/1.0, an error)
	ClosedHeaderTimeout = "header_timeout" // its first request header took longer than HeaderTimeout
	ClosedIdleTimeout   = "idle_timeout"   // no next request within IdleTimeout
	ClosedActiveTimeout = "active_timeout" // one request took longer than ActiveTimeout to handle and answer
	ClosedShutdown      = "shutdown"       // Shutdown or Close
)

// The state of a connection, as net/http's ConnState names them.
type connState uint8

const (
	stateNew    connState = iota // accepted, first request header not complete
	stateActive                  // a request is being handled and answered
	stateIdle                    // keep-alive, waiting for the next request
)

func (s connState) String() string {
	return [...]string{"new", "active", "idle"}[s]
}

type connClock struct {
	state connState
	since int64 // when it entered state, on the coarse clock (monotonic, so
	// that a step of the wall clock neither reaps every connection nor
	// suspends the limits)
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func orDefault[T int | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// start sets up the server's state and starts its reaper once.
func (s *Server) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	s.listeners = map[net.Listener]struct{}{}
	s.conns = map[*conn]connClock{}
	s.stop = make(chan struct{})
	s.epoch = time.Now()
	s.now.Store(0)
	go s.reaper(orDefault(s.Tick, DefaultTick))
}

// Serve accepts connections on ln and serves them until ln is closed or
// the server is shut down, when it returns http.ErrServerClosed. Serve
// may run on several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.start()
	defer ln.Close()
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.closed.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and retry,
			// as net/http does, rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log().Error("accepting a connection", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(rwc)
		if c == nil {
			rwc.Close()
			return http.ErrServerClosed
		}
		s.live.Add(1)
		go c.serve()
	}
}

// newConn registers a new connection, or returns nil once the server is
// shutting down.
func (s *Server) newConn(rwc net.Conn) *conn {
	base := s.BaseContext
	if base == nil {
		base = context.Background()
	}
	c := &conn{s: s, rwc: rwc, ctx: context.WithValue(base, http.LocalAddrContextKey, rwc.LocalAddr())}
	if ra := rwc.RemoteAddr(); ra != nil {
		c.remote = ra.String()
	}
	c.lr.R = rwc
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil
	}
	s.conns[c] = connClock{state: stateNew, since: s.now.Load()}
	s.mu.Unlock()
	if s.Observer != nil {
		s.Observer.ConnectionOpened()
	}
	return c
}

func (s *Server) setState(c *conn, st connState) {
	now := s.now.Load()
	s.mu.Lock()
	if _, ok := s.conns[c]; ok { // a reaped connection stays forgotten
		s.conns[c] = connClock{state: st, since: now}
	}
	s.mu.Unlock()
}

// forget drops a connection that has ended and returns why it ended.
func (s *Server) forget(c *conn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if c.reason == "" {
		return ClosedEnded
	}
	return c.reason
}

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish and closes their connections after the response, and
// returns once no connection is left or ctx is done (then with its error;
// Close ends the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.start()
	s.closed.Store(true)
	s.closeListeners()
	wait := time.Millisecond
	for {
		if s.closeIdle() == 0 && s.live.Load() == 0 {
			s.stopReaper()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
			wait = min(2*wait, 100*time.Millisecond)
		}
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.start()
	s.closed.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.reason = ClosedShutdown
		c.rwc.Close()
		delete(s.conns, c)
	}
	s.mu.Unlock()
	s.stopReaper()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
		delete(s.listeners, ln)
	}
}

// closeIdle closes the connections waiting for a request (new ones after
// a second, to let a request just sent arrive) and returns how many
// connections are left.
func (s *Server) closeIdle() int {
	now := int64(time.Since(s.epoch))
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, t := range s.conns {
		if t.state == stateIdle || t.state == stateNew && now-t.since > int64(time.Second) {
			c.reason = ClosedShutdown
			c.rwc.Close()
			delete(s.conns, c)
		}
	}
	return len(s.conns)
}

func (s *Server) stopReaper() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

// Tracked is how many connections the server holds.
func (s *Server) Tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// reaper advances the coarse clock and closes connections over their
// state's limit once a tick.
func (s *Server) reaper(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			d := int64(now.Sub(s.epoch))
			s.now.Store(d)
			s.reap(d)
		}
	}
}

// reap closes every connection that has been in its state longer than
// that state's limit, and returns how many it closed.
func (s *Server) reap(now int64) int {
	limits := [...]time.Duration{
		stateNew:    orDefault(s.HeaderTimeout, DefaultHeaderTimeout),
		stateActive: orDefault(s.ActiveTimeout, DefaultActiveTimeout),
		stateIdle:   orDefault(s.IdleTimeout, DefaultIdleTimeout),
	}
	reasons := [...]string{stateNew: ClosedHeaderTimeout, stateActive: ClosedActiveTimeout, stateIdle: ClosedIdleTimeout}
	type late struct {
		c   *conn
		clk connClock
	}
	var over []late
	s.mu.Lock()
	for c, t := range s.conns {
		if now-t.since > int64(limits[t.state]) {
			over = append(over, late{c, t})
			c.reason = reasons[t.state]
			delete(s.conns, c)
		}
	}
	s.mu.Unlock()
	for _, l := range over {
		s.log().Debug("closing a slow connection", "remote", l.c.remote, "state", l.clk.state.String(),
			"for", time.Duration(now-l.clk.since).Truncate(time.Millisecond).String())
		l.c.rwc.Close()
	}
	return len(over)
}

// dateLine is a Date header line for one second.
type dateLine struct {
	unix int64
	line string
}

// dateHeader returns "Date: <IMF-fixdate>\r\n" for now, formatted once a
// second.
func (s *Server) dateHeader(now time.Time) string {
	sec := now.Unix()
	if d := s.date.Load(); d != nil && d.unix == sec {
		return d.line
	}
	d := &dateLine{unix: sec, line: "Date: " + now.UTC().Format(http.TimeFormat) + "\r\n"}
	s.date.Store(d)
	return d.line
}

// conn is one client connection and the state its requests reuse.
type conn struct {
	s      *Server
	rwc    net.Conn
	remote string
	ctx    context.Context
	lr     io.LimitedReader // bounds the request line and header
	br     *bufio.Reader
	bw     *bufio.Writer
	w      response
	reason string // why the server closed it; guarded by s.mu
}

func (c *conn) serve() {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.s.log().Error("panic serving a request", "remote", c.remote, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		c.rwc.Close()
		reason := c.s.forget(c)
		if c.s.Observer != nil {
			c.s.Observer.ConnectionClosed(reason)
		}
		c.s.live.Add(-1)
	}()
	c.br = bufio.NewReaderSize(&c.lr, 4<<10)
	c.bw = bufio.NewWriterSize(c.rwc, 4<<10)
	c.w.header = make(http.Header, 8)
	maxHeader := int64(orDefault(c.s.MaxHeaderBytes, DefaultMaxHeaderBytes))
	for {
		// As net/http: the limit covers what bufio may read ahead too.
		c.lr.N = maxHeader + 4096
		req, err := http.ReadRequest(c.br)
		if err != nil {
			c.readFailed(err)
			return
		}
		c.s.setState(c, stateActive)
		c.lr.N = 1<<63 - 1
		if !c.handle(req) {
			return
		}
		c.s.setState(c, stateIdle)
	}
}

// readFailed answers a request that could not be read, as net/http does,
// unless the client closed the connection or it was closed under it.
func (c *conn) readFailed(err error) {
	switch {
	case c.lr.N <= 0:
		c.s.log().Debug("request header too large", "remote", c.remote)
		c.plainError(http.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large")
	case errors.Is(err, io.EOF), isConnError(err):
		// Gone between requests, or closed by Shutdown or the reaper.
	default:
		c.s.log().Debug("malformed request", "remote", c.remote, "err", err)
		c.plainError(http.StatusBadRequest, "400 Bad Request")
	}
}

// isConnError reports an error of the connection itself (reset, closed
// under the read), as opposed to one in what the client sent.
func isConnError(err error) bool {
	var oe *net.OpError
	return errors.Is(err, net.ErrClosed) || errors.As(err, &oe)
}

// plainError writes a protocol error, as net/http words them, and closes
// the connection without resetting it.
func (c *conn) plainError(code int, body string) {
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%s", code, http.StatusText(code), body)
	if c.bw.Flush() == nil {
		c.lingerClose()
	}
}

// refuse answers a request with a protocol error; a HEAD request gets
// no body.
func (c *conn) refuse(req *http.Request, code int, body string) {
	if req.Method == http.MethodHead {
		body = ""
	}
	c.plainError(code, body)
}

// lingerClose ends a connection whose client may still be sending (a body
// not read, a request refused mid-way): closing with unread input would
// reset the connection, and a reset can destroy the response before the
// client reads it. So it sends FIN first and discards input until the
// client closes too, for at most half a second, as net/http does.
func (c *conn) lingerClose() {
	cw, ok := c.rwc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.rwc, 1<<20))
}

// handle runs the handler for req and writes its response; it returns
// whether the connection stays open for another request.
func (c *conn) handle(req *http.Request) bool {
	if req.ProtoMajor != 1 {
		c.refuse(req, http.StatusHTTPVersionNotSupported, "505 HTTP Version Not Supported")
		return false
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" || !validHost(req.Host) {
		c.refuse(req, http.StatusBadRequest, "400 Bad Request: missing or invalid Host header")
		return false
	}
	// As net/http's server, beyond what http.ReadRequest checks.
	for k, vv := range req.Header {
		if !validFieldName(k) {
			c.refuse(req, http.StatusBadRequest, "400 Bad Request: invalid header name")
			return false
		}
		for _, v := range vv {
			if !validFieldValue(v) {
				c.refuse(req, http.StatusBadRequest, "400 Bad Request: invalid header value")
				return false
			}
		}
	}
	keepAlive := !req.Close && !c.s.closed.Load()
	hasBody := req.Body != nil && req.Body != http.NoBody
	expectBody := false
	if e := req.Header["Expect"]; len(e) > 0 {
		if len(e) > 1 || !strings.EqualFold(e[0], "100-continue") {
			c.refuse(req, http.StatusExpectationFailed, "417 Expectation Failed")
			return false
		}
		if hasBody {
			// The client waits for a 100 Continue before it sends the
			// body, which handlers here never read: answer, and close
			// rather than read a body that may never come.
			keepAlive, hasBody, expectBody = false, false, true
		}
	}
	req.RemoteAddr = c.remote
	req = req.WithContext(c.ctx)
	// The handler gets a body whose Close does not read on: net/http's
	// own Close would consume a body of any size.
	body := req.Body
	if hasBody {
		req.Body = &handlerBody{r: body}
	}
	c.w.reset(req.Method == http.MethodHead)
	c.s.Handler.ServeHTTP(&c.w, req)
	unread := expectBody
	if hasBody {
		// Discard what the handler left of the body, up to a limit; a
		// body declared larger is not read at all.
		if req.ContentLength > maxDrain {
			keepAlive, unread = false, true
		} else if n, err := io.CopyN(io.Discard, body, maxDrain+1); n > maxDrain || err != io.EOF {
			keepAlive, unread = false, true
		}
	}
	if wantsClose(c.w.header) {
		keepAlive = false
	}
	if c.s.closed.Load() {
		keepAlive = false
	}
	c.w.writeTo(c.bw, req, keepAlive, c.s.dateHeader(time.Now()))
	if err := c.bw.Flush(); err != nil {
		return false
	}
	if !keepAlive && (unread || c.br.Buffered() > 0) {
		c.lingerClose()
	}
	return keepAlive
}

// validFieldValue rejects control characters other than tab.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts what net/http's server accepts in Host (the bytes of
// RFC 3986's reg-name, IP literals and a port): letters, digits and
// !$%&'()*+,-.:;=[]_~ — so no userinfo (@), path, query or fragment can
// reach the handler's host check.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
			continue
		}
		if strings.IndexByte("!$%&'()*+,-.:;=[]_~", b) < 0 {
			return false
		}
	}
	return true
}

// wantsClose reports whether the handler set Connection: close.
func wantsClose(h http.Header) bool {
	for _, v := range h["Connection"] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "close") {
				return true
			}
		}
	}
	return false
}

// handlerBody is the request body a handler sees: reading is the
// request's, closing only stops further reads.
type handlerBody struct {
	r      io.Reader
	closed bool
}

func (b *handlerBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.r.Read(p)
}

func (b *handlerBody) Close() error {
	b.closed = true
	return nil
}

package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits bound what one client can hold on a listener. Every listener of
// the daemon (the metadata API, metrics/healthz, the control socket) is a
// net/http.Server with these applied.
type Limits struct {
	// HeaderTimeout bounds reading a request header, on a new connection
	// and on every reused one (http.Server.ReadHeaderTimeout), and reading
	// a request body, for a handler that reads one (see bodies).
	HeaderTimeout time.Duration
	// IdleTimeout bounds a keep-alive connection between requests.
	IdleTimeout time.Duration
	// WriteTimeout bounds one request from the end of its header to the
	// end of its response, so a client that does not read its answers
	// (a slow reader) holds a connection at most this long.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds a request header.
	MaxHeaderBytes int
	// MaxConns caps the open connections of one listener; Accept waits
	// while the cap is reached (the kernel's backlog holds new ones).
	MaxConns int
}

// APILimits are the metadata listener's limits. SDKs send one small request
// and read the answer at once; the idle timeout is longer than the SDKs'
// own keep-alive (botocore's and the Go SDK's 90 s idle pools stay below
// it at the client side or are told by a close).
var APILimits = Limits{
	HeaderTimeout:  5 * time.Second,
	IdleTimeout:    90 * time.Second,
	WriteTimeout:   30 * time.Second,
	MaxHeaderBytes: 16 << 10,
	MaxConns:       4096,
}

// AdminLimits are the metrics/healthz and control-socket listeners' limits:
// the API's timeouts with a small cap, because one scraper and one
// `imds-shim status` are all that ever connect.
var AdminLimits = Limits{
	HeaderTimeout:  APILimits.HeaderTimeout,
	IdleTimeout:    APILimits.IdleTimeout,
	WriteTimeout:   APILimits.WriteTimeout,
	MaxHeaderBytes: APILimits.MaxHeaderBytes,
	MaxConns:       64,
}

// ConnObserver hears about connections: once when each opens, once when
// it closes with one of the Closed* reasons.
type ConnObserver interface {
	ConnectionOpened()
	ConnectionClosed(reason string)
}

// Why a connection closed, for metrics.
const (
	ClosedEnded         = "ended"          // by the client, or after its request (Connection: close, HTTP/1.0, an error)
	ClosedHeaderTimeout = "header_timeout" // a request header (or a body a handler reads) not complete within HeaderTimeout
	ClosedIdleTimeout   = "idle_timeout"   // no next request within IdleTimeout
	ClosedWriteTimeout  = "write_timeout"  // an answer not taken by the client within WriteTimeout
	ClosedShutdown      = "shutdown"       // the server stopped
)

// ClosedReasons lists every reason ConnectionClosed reports.
var ClosedReasons = []string{ClosedEnded, ClosedHeaderTimeout, ClosedIdleTimeout, ClosedWriteTimeout, ClosedShutdown}

// HTTPServer is a net/http.Server with Limits applied and its connections
// observed. Serve it on any number of listeners; each gets its own cap.
type HTTPServer struct {
	srv     *http.Server
	limits  Limits
	obs     ConnObserver
	closing atomic.Bool
}

// HTTPOptions are an HTTPServer's collaborators; all may be zero.
type HTTPOptions struct {
	// Log receives net/http's own errors (failed Accept, a panic in a
	// handler) at warning level.
	Log *slog.Logger
	// Observer hears of every connection opened and closed.
	Observer ConnObserver
	// BaseContext is the parent of every request's context.
	BaseContext context.Context
	// ConnContext, when set, derives each connection's context once, at
	// accept. The net.Conn it gets is a *Conn: its NetConn is the accepted
	// *net.TCPConn (or *net.UnixConn), and it implements syscall.Conn, so
	// the caller's socket can be queried (SO_PEERCRED, the TCP tuple).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
}

// NewHTTPServer returns a server for h with limits l.
func NewHTTPServer(h http.Handler, l Limits, o HTTPOptions) *HTTPServer {
	s := &HTTPServer{limits: l, obs: o.Observer}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := o.BaseContext
	if base == nil {
		base = context.Background()
	}
	s.srv = &http.Server{
		Handler:           bodies(h, l.HeaderTimeout),
		ReadHeaderTimeout: l.HeaderTimeout,
		// No ReadTimeout: after a request's header, nothing is read from
		// the client but a body a handler asks for, which bodies bounds,
		// and the next request, which IdleTimeout and ReadHeaderTimeout
		// bound.
		WriteTimeout:   l.WriteTimeout,
		IdleTimeout:    l.IdleTimeout,
		MaxHeaderBytes: l.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:    func(net.Listener) context.Context { return base },
		ConnContext:    o.ConnContext,
		ConnState:      s.connState,
	}
	return s
}

// Serve accepts connections on ln until the server is shut down or ln is
// closed; it returns nil then, as for a listener removed on reload.
func (s *HTTPServer) Serve(ln net.Listener) error {
	err := s.srv.Serve(&limitListener{Listener: ln, sem: make(chan struct{}, max(s.limits.MaxConns, 1))})
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight, until ctx ends.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	return s.srv.Shutdown(ctx)
}

// Close closes every listener and connection at once.
func (s *HTTPServer) Close() error {
	s.closing.Store(true)
	return s.srv.Close()
}

func (s *HTTPServer) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*Conn)
	if !ok {
		return
	}
	switch st {
	case http.StateNew:
		if s.obs != nil {
			s.obs.ConnectionOpened()
		}
	case http.StateClosed, http.StateHijacked:
		prev := http.ConnState(c.state.Load())
		if s.obs != nil {
			s.obs.ConnectionClosed(s.reason(c, prev))
		}
	case http.StateIdle:
		c.readSinceIdle.Store(false)
	}
	c.state.Store(int32(st))
}

func (s *HTTPServer) reason(c *Conn, prev http.ConnState) string {
	switch c.timeout.Load() {
	case timeoutWrite:
		return ClosedWriteTimeout
	case timeoutRead:
		if prev == http.StateIdle && !c.readSinceIdle.Load() {
			return ClosedIdleTimeout
		}
		return ClosedHeaderTimeout
	}
	if s.closing.Load() {
		return ClosedShutdown
	}
	return ClosedEnded
}

// limitListener caps open connections with a semaphore and wraps each in a
// *Conn. (golang.org/x/net/netutil.LimitListener would cap them too, but
// its connection type hides the socket that ConnContext needs, and the
// timeout a connection hit has to be recorded at this layer anyway.)
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &Conn{Conn: c, release: func() { <-l.sem }}, nil
}

const (
	timeoutRead = 1 + iota
	timeoutWrite
)

// Conn is an accepted connection as the daemon's HTTP servers see it: the
// socket, plus which deadline (if any) it hit and its last http.ConnState.
type Conn struct {
	net.Conn
	release func()
	once    sync.Once
	timeout atomic.Int32
	state   atomic.Int32
	// cancelRead is set while the read deadline lies in the past: that is
	// net/http ending its own background read after a request, not a
	// client running out of time.
	cancelRead atomic.Bool
	// readSinceIdle: bytes of a next request arrived after the last
	// response, so a timeout now is a header timeout, not an idle one.
	readSinceIdle atomic.Bool
}

// SetReadDeadline notes whether t cancels a read rather than bounds one.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.cancelRead.Store(!t.IsZero() && t.Before(cancelledBefore))
	return c.Conn.SetReadDeadline(t)
}

// cancelledBefore: net/http cancels a pending read with a deadline of
// 1970-01-01T00:00:01Z, and so does bodies; no real deadline
// lies before this.
var cancelledBefore = time.Unix(1<<20, 0)

// bodies: no handler of the daemon reads a request body (the metadata
// API, metrics and the control socket take none), so a request that comes
// with one is answered and its connection closed after the answer, the body
// unread: net/http would otherwise read up to 256 KiB of it, at the client's
// pace, before the next request, and a client that sends "Expect:
// 100-continue" would be waited for until it gave up, since it sends its
// body only after a 100 Continue that a handler which does not read never
// triggers. A handler that does read the body gets HeaderTimeout to read
// it, from its first read.
func bodies(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		b := &unreadBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: timeout}
		r.Body = b
		next.ServeHTTP(w, r)
		b.cancelIfUnread()
	})
}

type unreadBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	read    atomic.Bool
}

func (b *unreadBody) Read(p []byte) (int, error) {
	if !b.read.Swap(true) {
		b.rc.SetReadDeadline(time.Now().Add(b.timeout)) //nolint:errcheck // only fails on a connection already gone
	}
	return b.ReadCloser.Read(p)
}

func (b *unreadBody) Close() error {
	b.cancelIfUnread()
	return b.ReadCloser.Close()
}

func (b *unreadBody) cancelIfUnread() {
	if !b.read.Load() {
		b.rc.SetReadDeadline(time.Unix(1, 0)) //nolint:errcheck // only fails on a connection already gone
	}
}

// NetConn returns the accepted connection (*net.TCPConn or *net.UnixConn).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// SyscallConn gives access to the socket, for getsockopt.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no socket")
	}
	return sc.SyscallConn()
}

// CloseWrite lets net/http half-close before closing after an error, as it
// does on a bare *net.TCPConn.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.readSinceIdle.Store(true)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !c.cancelRead.Load() {
		c.timeout.CompareAndSwap(0, timeoutRead)
	}
	return n, err
}

func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timeout.CompareAndSwap(0, timeoutWrite)
	}
	return n, err
}

// Close closes the socket and frees its slot under the cap, once.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connReaper bounds how long a metadata connection may stay in each of
// net/http's connection states, as ReadHeaderTimeout, IdleTimeout and a
// write timeout would, but at the granularity of its tick and without their
// cost: those re-arm and clear a runtime timer on the connection two or
// three times per request, about 5 % of a credential GET's CPU
// (test/bench). Here a request costs two map updates from http.Server's
// ConnState hook, and one goroutine looks at every connection once a tick.
//
// The limits, per state net/http reports:
//   - new: accepted, first request header not yet complete (slow or silent
//     clients; net/http stays in StateNew until the header is read);
//   - idle: a keep-alive connection between requests, including a next
//     request's header that is still arriving;
//   - active: a request being handled and answered (a client that stops
//     reading a response larger than the socket buffer).
//
// A connection over its limit is closed; net/http then reports it closed
// and it leaves the map.
type connReaper struct {
	newMax, idleMax, activeMax time.Duration
	tick                       time.Duration
	log                        *slog.Logger

	now atomic.Int64 // coarse clock, Unix nanoseconds, advanced every tick

	mu    sync.Mutex
	conns map[net.Conn]connClock
}

type connClock struct {
	state http.ConnState
	since int64 // when it entered state, on the coarse clock
}

func newConnReaper(log *slog.Logger, newMax, idleMax, activeMax, tick time.Duration) *connReaper {
	r := &connReaper{newMax: newMax, idleMax: idleMax, activeMax: activeMax, tick: tick, log: log,
		conns: map[net.Conn]connClock{}}
	r.now.Store(time.Now().UnixNano())
	return r
}

// ConnState is the http.Server hook.
func (r *connReaper) ConnState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew, http.StateActive, http.StateIdle:
		now := r.now.Load()
		r.mu.Lock()
		r.conns[c] = connClock{state: s, since: now}
		r.mu.Unlock()
	case http.StateClosed, http.StateHijacked:
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}
}

// Run advances the clock and reaps once a tick until ctx is done.
func (r *connReaper) Run(ctx context.Context) {
	t := time.NewTicker(r.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.now.Store(now.UnixNano())
			r.reap(now.UnixNano())
		}
	}
}

// reap closes every connection that has been in its state longer than
// that state's limit, and returns how many it closed.
func (r *connReaper) reap(now int64) int {
	type late struct {
		c     net.Conn
		state http.ConnState
		age   time.Duration
	}
	var over []late
	r.mu.Lock()
	for c, t := range r.conns {
		limit := r.limit(t.state)
		if age := time.Duration(now - t.since); limit > 0 && age > limit {
			over = append(over, late{c, t.state, age})
			delete(r.conns, c)
		}
	}
	r.mu.Unlock()
	for _, l := range over {
		r.log.Debug("closing a slow metadata connection", "remote", l.c.RemoteAddr().String(),
			"state", l.state.String(), "for", l.age.Truncate(time.Millisecond).String())
		_ = l.c.Close()
	}
	return len(over)
}

func (r *connReaper) limit(s http.ConnState) time.Duration {
	switch s {
	case http.StateNew:
		return r.newMax
	case http.StateIdle:
		return r.idleMax
	case http.StateActive:
		return r.activeMax
	}
	return 0
}

// tracked is how many connections the reaper is watching.
func (r *connReaper) tracked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

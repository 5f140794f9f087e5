package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// ceilingMain serves a fixed body of -size bytes for every request: the
// least work a Go net/http server can do per request, so the most requests
// per second any Go HTTP server can answer on this machine.
//
// With -floor it serves the same body as the least that issue 11 lets the
// daemon do: a net/http.Server with the metadata listener's limits
// (daemon.APILimits: header, write and idle timeouts, header size), answering
// with the response headers the daemon's credential GET sends (Server:
// EC2ws, the token's TTL counted down per request, Content-Type,
// Content-Length, Accept-Ranges), and nothing of imds-shim's own (no token
// check, no routing, no metrics, no connection tracking). What the floor
// costs over the ceiling is the standard library's price for those; what the
// daemon costs over the floor is imds-shim's own code.
//
// -stats serves the process's allocation and GC counters on a listener of
// their own (gcCounts).
//
// -heap keeps that much more live heap for the garbage collector to mark,
// as a process with more libraries and state (the daemon) has: it shows
// what a larger heap alone does to the latency under load.
func ceilingMain(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	size := fs.Int("size", 1200, "body size in bytes (the credential document's)")
	floor := fs.Bool("floor", false, "serve with the daemon's limits and response headers")
	heapKiB := fs.Int("heap", 0, "KiB of live heap to keep, in small objects that hold pointers, for the garbage collector to mark")
	stats := fs.String("stats", "", "also serve the Go collector's metrics (allocations, GC cycles) on this address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stats != "" {
		if err := serveGCCounts(*stats); err != nil {
			return err
		}
	}
	body := bytes.Repeat([]byte("x"), *size)
	keepHeap(*heapKiB)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	announce(ln)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(body)
	})}
	if *floor {
		l := daemon.APILimits
		srv = &http.Server{
			Handler:           floorHandler(body, time.Now().Add(6*time.Hour)),
			ReadHeaderTimeout: l.HeaderTimeout,
			WriteTimeout:      l.WriteTimeout,
			IdleTimeout:       l.IdleTimeout,
			MaxHeaderBytes:    l.MaxHeaderBytes,
		}
	}
	return srv.Serve(ln)
}

// keepHeap adds about kib KiB to the live heap, kept in ballast.
func keepHeap(kib int) {
	for i := range kib * 1024 / int(unsafe.Sizeof(heapNode{})) {
		ballast = &heapNode{next: ballast, name: strconv.Itoa(i)}
	}
}

// ballast is what -heap keeps live: a list, so that marking it takes as
// many pointer hops as it has nodes.
var ballast *heapNode

type heapNode struct {
	next *heapNode
	name string
	_    [5]int64
}

// floorHandler answers with body and the headers of the daemon's credential
// GET for a token that expires at exp.
func floorHandler(body []byte, exp time.Time) http.Handler {
	length := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Server", "EC2ws")
		h.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", strconv.FormatInt(int64((time.Until(exp)+time.Second-1)/time.Second), 10))
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", length)
		h.Set("Accept-Ranges", "none")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}

// announce tells the parent, on stdout, where the server listens.
func announce(ln net.Listener) {
	fmt.Printf("LISTENING %s\n", ln.Addr())
}

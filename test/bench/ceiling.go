package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/http"
)

// ceilingMain serves a fixed body of -size bytes for every request: the
// least work a Go net/http server can do per request, so the most requests
// per second any Go HTTP server can answer on this machine.
func ceilingMain(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	size := fs.Int("size", 1200, "body size in bytes (the credential document's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := bytes.Repeat([]byte("x"), *size)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *addr, err)
	}
	announce(ln)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(body)
	})}
	return srv.Serve(ln)
}

// announce tells the parent, on stdout, where the server listens.
func announce(ln net.Listener) {
	fmt.Printf("LISTENING %s\n", ln.Addr())
}

package moto

import (
	"context"
	"errors"
	"os"
	"testing"
)

// Server is a moto server owned by one test.
type Server struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:40123; use it as
	// the STS endpoint.
	URL string

	tb   testing.TB
	proc *Process
}

// EnvURL names a moto server that is already running, for test binaries that
// run where moto cannot (the stock-kernel suite's guest reaches the host's
// moto through QEMU's user network). Start then uses it instead of starting
// one; the tests must not rely on a server of their own.
const EnvURL = "IMDS_SHIM_TEST_MOTO_URL"

// Start starts a moto server on host (e.g. "127.0.0.1") and stops it when
// the test ends, or uses the one $IMDS_SHIM_TEST_MOTO_URL names. Without
// python3 or moto the test is skipped, or fails when the CI environment
// variable is set, so CI cannot pass by skipping.
func Start(tb testing.TB, host string) *Server {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return &Server{URL: u, tb: tb, proc: &Process{URL: u, output: &lockedBuffer{}}}
	}
	p, err := StartProcess(context.Background(), host, nil)
	if err != nil {
		if errors.Is(err, ErrUnavailable) && os.Getenv("CI") == "" {
			tb.Skipf("skipping: %v", err)
		}
		tb.Fatalf("starting moto: %v", err)
	}
	tb.Cleanup(p.Stop)
	return &Server{URL: p.URL, tb: tb, proc: p}
}

// Reset clears the server's state, failing the test if it cannot.
func (s *Server) Reset() {
	s.tb.Helper()
	if err := s.proc.Reset(context.Background()); err != nil {
		s.tb.Fatalf("%v", err)
	}
}

// Output returns the server's log so far, for failure messages.
func (s *Server) Output() string { return s.proc.Output() }

package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
	"github.com/imds-shim/imds-shim/pkg/imds"
)

const (
	benchRoleARN = "arn:aws:iam::123456789012:role/bench-role"
	benchRole    = "bench-role"
)

// rotatingSource is a CredentialSource whose set a goroutine replaces with
// a fresh one (new key, secret and token) every period.
type rotatingSource struct {
	cur atomic.Pointer[credentials.Credentials]
}

func (s *rotatingSource) Current() (credentials.Credentials, error) {
	return *s.cur.Load(), nil
}

func (s *rotatingSource) rotate(life time.Duration) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	now := time.Now()
	c := credentials.Credentials{
		AccessKeyID:     "ASIA" + h[:16],
		SecretAccessKey: h[:40],
		SessionToken:    "FwoGZXIvYXdzE" + h + h + h + h + h + h + h + h, // ~400 bytes like STS's
		Expires:         now.Add(life),
		LastUpdated:     now,
		RoleARN:         benchRoleARN,
		AccountID:       "123456789012",
	}
	s.cur.Store(&c)
}

// rotatingMain serves imds.Server, the same handler the daemon runs, in
// the daemon's HTTP server (daemon.NewHTTPServer with APILimits; or, for comparison, a bare net/http.Server), with
// credentials that rotate every -every and expire -life after issue, so a
// client that ever sees an expired or empty document proves a race in the
// hand-over from one set to the next.
func rotatingMain(args []string) error {
	fs := flag.NewFlagSet("rotating", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	every := fs.Duration("every", time.Second, "rotation period")
	life := fs.Duration("life", 3*time.Second, "lifetime of each set")
	server := fs.String("server", "daemon", "daemon (as the daemon serves it) or net/http (bare)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	src := &rotatingSource{}
	src.rotate(*life)
	srv, err := imds.NewServer(imds.Config{RoleARN: benchRoleARN}, src, imds.Options{
		Host: &imds.HostFacts{Hostname: "bench", MachineID: "0123456789abcdef0123456789abcdef", BootTime: time.Now()},
	})
	if err != nil {
		return fmt.Errorf("building imds server: %w", err)
	}
	go func() {
		for range time.Tick(*every) {
			src.rotate(*life)
		}
	}()
	ln, err := imds.Listen("tcp", *addr, 1)
	if err != nil {
		return err
	}
	announce(ln)
	switch *server {
	case "daemon":
		return daemon.NewHTTPServer(srv, daemon.APILimits, daemon.HTTPOptions{}).Serve(ln)
	case "net/http":
		return (&http.Server{Handler: srv}).Serve(ln)
	}
	return fmt.Errorf("-server %q: want daemon or net/http", *server)
}

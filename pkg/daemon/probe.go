package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The self-probe proves that THIS process answers on an address, not just
// that something answering like an IMDS does (anyone who holds the port
// could send Server: EC2ws).
//
// Each probe sends a fresh random challenge on a path only the daemon
// uses; the probe handler, in front of the metadata handler, answers only
// a challenge it has pending (compared in constant time), with
// HMAC-SHA256 of it under a per-process secret that never leaves memory.
// Another process holding the address sees the challenge but cannot
// compute the answer; a client guessing the path gets the metadata
// handler's answer (401/404), so the path is no oracle; a challenge is
// good for one probe.
//
// It does not tell a relay that forwards the probe to this process from a
// direct path: that relay would already hold the endpoint, which takes
// root here (the listener's port is privileged, the rules are root's).
// Matching the probe's source port was tried and dropped: NAT may remap
// a source port to keep conntrack tuples unique, which failed healthy
// probes.
//
// Probe requests never reach the metadata handler, so they are not counted
// as client requests.
const probePrefix = "/imds-shim/probe/"

type prober struct {
	secret []byte
	mu     sync.Mutex
	// pending holds the challenges of probes in flight.
	pending map[string]bool
	client  *http.Client
}

func newProber() (*prober, error) {
	p := &prober{secret: make([]byte, 32), pending: map[string]bool{}}
	if _, err := rand.Read(p.secret); err != nil {
		return nil, fmt.Errorf("generating the probe secret: %w", err)
	}
	p.client = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return p, nil
}

func (p *prober) answer(challenge string) string {
	m := hmac.New(sha256.New, p.secret)
	io.WriteString(m, challenge)
	return hex.EncodeToString(m.Sum(nil))
}

// probe asks addr to prove it is this process.
func (p *prober) probe(ctx context.Context, addr string) error {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	ch := hex.EncodeToString(raw)
	p.mu.Lock()
	p.pending[ch] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, ch)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+probePrefix+ch, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !hmac.Equal(body, []byte(p.answer(ch))) {
		return fmt.Errorf("answered by something other than this imds-shim process (status %d)", resp.StatusCode)
	}
	return nil
}

// handler answers probes and passes everything else to next.
func (p *prober) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch, ok := strings.CutPrefix(r.URL.Path, probePrefix)
		if ok && r.Method == http.MethodGet && p.isPending(ch) {
			body := p.answer(ch)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			io.WriteString(w, body)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isPending reports whether ch is a pending challenge, comparing it with
// every pending one in full, in constant time.
func (p *prober) isPending(ch string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	found := false
	for c := range p.pending {
		if hmac.Equal([]byte(c), []byte(ch)) {
			found = true
		}
	}
	return found
}

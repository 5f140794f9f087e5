package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The self-probe proves that THIS process answers on an address, not just
// that something answering like an IMDS does (anyone who holds the port,
// or a relay in front of us, could send Server: EC2ws).
//
// Each probe makes a fresh random challenge and remembers it with the local
// address of the probe's own TCP connection. The probe handler, in front
// of the metadata handler, answers GET <probePrefix><challenge> only when
// the challenge is pending (compared in constant time) AND the request
// arrives from that very connection; its answer is HMAC-SHA256 under a
// per-process secret that never leaves memory. So:
//   - another process holding the address sees the challenge but cannot
//     compute the answer;
//   - relaying the challenge to our listener does not help: the relay's
//     connection is not the probe's, so our handler does not answer it as a
//     probe, and the challenge is single-use;
//   - a client guessing the path gets the metadata handler's 404, so the
//     path is no oracle.
//
// Probe requests never reach the metadata handler, so they are not counted
// as client requests.
const probePrefix = "/imds-shim/probe/"

type prober struct {
	secret []byte
	mu     sync.Mutex
	// pending maps a challenge to the local address of the probe's
	// connection ("" until it is dialled).
	pending map[string]string
	client  *http.Client
}

type probeKey struct{}

func newProber() (*prober, error) {
	p := &prober{secret: make([]byte, 32), pending: map[string]string{}}
	if _, err := rand.Read(p.secret); err != nil {
		return nil, fmt.Errorf("generating the probe secret: %w", err)
	}
	p.client = &http.Client{Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if ch, ok := ctx.Value(probeKey{}).(string); ok {
				p.mu.Lock()
				if _, ok := p.pending[ch]; ok {
					p.pending[ch] = c.LocalAddr().String()
				}
				p.mu.Unlock()
			}
			return c, nil
		},
	}}
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
	p.pending[ch] = ""
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, ch)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, probeKey{}, ch), 2*time.Second)
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
		if ok && r.Method == http.MethodGet && p.isPending(ch, r.RemoteAddr) {
			body := p.answer(ch)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			io.WriteString(w, body)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isPending reports whether ch is a pending challenge whose probe
// connection is the one remote came from. Every pending challenge is
// compared in full, in constant time.
func (p *prober) isPending(ch, remote string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	found := false
	for c, from := range p.pending {
		if hmac.Equal([]byte(c), []byte(ch)) && from != "" && sameAddr(from, remote) {
			found = true
		}
	}
	return found
}

func sameAddr(a, b string) bool {
	x, err1 := netip.ParseAddrPort(a)
	y, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && x.Addr().Unmap() == y.Addr().Unmap() && x.Port() == y.Port()
}

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// startMetrics serves /metrics and /healthz on addr.
func (d *daemon) startMetrics(ctx context.Context, addr string) (*HTTPServer, error) {
	listen := d.deps.ListenMetrics
	if listen == nil {
		listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	if d.deps.MetricsHandler != nil {
		mux.Handle("GET /metrics", d.deps.MetricsHandler)
	}
	mux.HandleFunc("GET /healthz", d.healthz)
	srv := NewHTTPServer(mux, AdminLimits, HTTPOptions{Log: d.log.With("component", "metrics"), BaseContext: context.WithoutCancel(ctx)})
	go srv.Serve(ln) //nolint:errcheck // returns when closed on stop or reload
	return srv, nil
}

// metricsHeld: another process holds the metrics address. That does not
// stop the daemon, which is there for credentials: any local user can bind
// a port at or above ip_unprivileged_port_start (as 9254 is) before the
// daemon does, at boot or during a restart, and would otherwise keep every
// SDK on the host without credentials. The daemon serves without metrics
// and /healthz, says so in its log, its status and systemd's status line,
// and binds the address as soon as it is free (tried every MetricsRetry).
func (d *daemon) metricsHeld(ctx context.Context, addr string, err error) {
	every := d.deps.MetricsRetry
	if every <= 0 {
		every = DefaultMetricsRetry
	}
	d.mu.Lock()
	d.metricsErr = err.Error()
	gen := d.metricsGen
	d.mu.Unlock()
	d.log.Error("the metrics listener's address is held by another process: serving credentials without /metrics and /healthz until it is free",
		"addr", addr, "err", err, "retry_every", every)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			srv, err := d.startMetrics(ctx, addr)
			d.mu.Lock()
			if d.metricsGen != gen {
				d.mu.Unlock()
				if srv != nil {
					srv.Close()
				}
				return
			}
			if err != nil {
				d.metricsErr = err.Error()
				d.mu.Unlock()
				continue
			}
			d.metrics, d.metricsErr = srv, ""
			d.mu.Unlock()
			d.log.Info("metrics listener bound", "addr", addr)
			return
		}
	}()
}

// DefaultMetricsRetry is how often a held metrics address is tried again.
const DefaultMetricsRetry = 5 * time.Second

// healthz answers 200 when the daemon serves valid credentials on its
// listener and through 169.254.169.254 (for at least one role; the body
// names the roles that have none: "degraded: …"), and 503 with the reason
// when it does not, so that fleet monitoring sees an STS outage before the last good
// credentials run out, and a redirect that no longer reaches us.
func (d *daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	d.mu.Lock()
	creds := d.creds
	d.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := creds.Current(); err != nil {
		// An engine that can say which roles fail and names none only has
		// per-caller roles no caller has asked for yet: nothing is wrong.
		if f, ok := creds.(failingReporter); !ok || len(f.Failing()) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %s\n", oneLine(err))
			return
		}
	}
	if err := d.probe(context.Background()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unhealthy: metadata listener does not answer: %s\n", oneLine(err))
		return
	}
	// Clients come through the redirect: prove it reaches this process.
	if err := d.probeEndpoint(context.Background()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unhealthy: %s\n", oneLine(err))
		return
	}
	// Some roles serve, others fail: 200, naming them. A restart (what a
	// 503 to a watchdog or load balancer leads to) cannot make STS accept
	// a role it refuses, and would take the serving roles down with it.
	if f, ok := creds.(failingReporter); ok {
		if failing := f.Failing(); len(failing) > 0 {
			fmt.Fprintf(w, "degraded: %d role(s) without credentials (their callers get 500):\n", len(failing))
			for _, r := range failing {
				fmt.Fprintf(w, "  %s\n", oneLine(errors.New(r)))
			}
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// Status is what `imds-shim status` prints.
type Status struct {
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Config  string    `json:"config"`
	Started time.Time `json:"started"`
	RoleARN string    `json:"role_arn"`
	Listen  string    `json:"listen"`
	// Listeners are every metadata listener, imds.listen first (with the
	// network managed and IPv6 in use, [fd00:ec2::254] on the same port).
	Listeners []string `json:"listeners"`
	Tokens    string   `json:"tokens"`
	HopLimit  int      `json:"hop_limit"`
	Metrics   string   `json:"metrics,omitempty"`
	// MetricsError is why the metrics listener is not bound (another
	// process holds its address: it is tried again until free).
	MetricsError    string `json:"metrics_error,omitempty"`
	ManageNetwork   bool   `json:"manage_network"`
	Reloads         int    `json:"reloads"`
	LastReloadError string `json:"last_reload_error,omitempty"`
	// ReloadAttempts counts every reload finished, applied or rejected,
	// so that `imds-shim reload` can wait for the one it asked for.
	ReloadAttempts int `json:"reload_attempts"`
	// Credentials and Network come from the components themselves.
	Credentials       any    `json:"credentials,omitempty"`
	CredentialsError  string `json:"credentials_error,omitempty"`
	CredentialsExpire string `json:"credentials_expire,omitempty"`
	Network           any    `json:"network,omitempty"`
	NetworkError      string `json:"network_error,omitempty"`
}

func (d *daemon) managed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.net != nil
}

func (d *daemon) status(ctx context.Context) Status {
	d.mu.Lock()
	cfg, creds, network, lns := d.cfg, d.creds, d.net, d.lns
	s := Status{
		Version: d.deps.Version, PID: os.Getpid(), Config: d.path, Started: d.started.UTC(),
		RoleARN: cfg.RoleARN.String(), Listen: lns[0].ln.Addr().String(), Tokens: cfg.IMDS.Tokens, HopLimit: cfg.IMDS.HopLimit,
		Metrics: cfg.MetricsListen(), MetricsError: d.metricsErr, ManageNetwork: cfg.ManageNetwork(), Reloads: d.reloads, LastReloadError: d.lastErr, ReloadAttempts: d.reloadAttempts,
	}
	for _, b := range lns {
		s.Listeners = append(s.Listeners, b.ln.Addr().String())
	}
	d.mu.Unlock()
	if c, err := creds.Current(); err != nil {
		s.CredentialsError = err.Error()
	} else {
		s.CredentialsExpire = c.Expires.UTC().Format(time.RFC3339)
	}
	if r, ok := creds.(StatusReporter); ok {
		s.Credentials, _ = r.Status(ctx)
	}
	if r, ok := network.(StatusReporter); ok {
		v, err := r.Status(ctx)
		s.Network = v
		if err != nil {
			s.NetworkError = err.Error()
		}
	}
	return s
}

// startControl serves GET /status as JSON on the control socket, readable by
// root only.
func (d *daemon) startControl(ctx context.Context) (*HTTPServer, error) {
	path := d.deps.ControlSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.status(r.Context())) //nolint:errcheck // the client went away
	})
	srv := NewHTTPServer(mux, AdminLimits, HTTPOptions{Log: d.log.With("component", "control"), BaseContext: context.WithoutCancel(ctx)})
	go srv.Serve(ln) //nolint:errcheck // returns when closed on stop
	return srv, nil
}

// ReadStatus asks the daemon listening on socket for its status.
func ReadStatus(ctx context.Context, socket string) (*Status, []byte, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
		// One request per connection: a kept-alive one would stay open
		// on the daemon's side until its idle timeout, and a caller that
		// polls (imds-shim reload) would fill the socket's connection cap.
		DisableKeepAlives: true,
	}, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://imds-shim/status", nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("asking the running daemon at %s (is imds-shim running?): %w", socket, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("reading status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("decoding status: %w", err)
	}
	return &s, raw, nil
}

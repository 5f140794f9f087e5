package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
)

// Exit codes of `imds-shim serve`, documented in README.md and imds-shim(8).
const (
	ExitOK      = 0
	ExitFailure = 1 // a runtime failure after start-up
	// ExitUsage is EX_USAGE from sysexits.h, not 2: the Go runtime exits
	// with 2 on a panic and on SIGABRT (systemd's watchdog kill), and those
	// must stay restartable while a bad command line must not.
	ExitUsage       = 64 // bad command line
	ExitConfig      = 3  // the configuration file is missing or invalid
	ExitCredentials = 4  // no first credentials from STS within start_timeout
	ExitNetwork     = 5  // the address, the rules or the listener could not be set up
)

// ExitError carries the exit code for an error that ends the daemon.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func exitErr(code int, format string, args ...any) error {
	return &ExitError{Code: code, Err: fmt.Errorf(format, args...)}
}

// CredentialEngine is the part of credentials.Refresher the daemon drives.
type CredentialEngine interface {
	Fetch(ctx context.Context) error
	Run(ctx context.Context) error
	Current() (credentials.Credentials, error)
}

// Network is the part of netredirect.Redirector the daemon drives.
type Network interface {
	Setup(ctx context.Context) error
	Teardown(ctx context.Context) error
	Run(ctx context.Context) error
}

// Handler is the IMDS API; Update switches it to a new configuration and
// credential source without disturbing requests in flight.
type Handler interface {
	http.Handler
	Update(cfg *config.Config, creds CredentialEngine) error
}

// StatusReporter is implemented by components that can describe themselves
// for `imds-shim status`.
type StatusReporter interface {
	Status(ctx context.Context) (any, error)
}

// Notifier sends sd_notify(3) state strings to systemd.
type Notifier interface {
	Notify(state string) error
}

// Deps are the daemon's side effects, injected so that tests can replace
// every one of them.
type Deps struct {
	Log *slog.Logger
	// Load reads and fully validates the configuration file.
	Load func(path string) (*config.Config, error)
	// Cleanup removes leftovers of an earlier run, found by ownership.
	Cleanup func(ctx context.Context) error
	// NewCredentials, NewNetwork and NewHandler build components without
	// side effects; the daemon decides when they act.
	NewCredentials func(ctx context.Context, cfg *config.Config) (CredentialEngine, error)
	NewNetwork     func(cfg *config.Config) (Network, error)
	NewHandler     func(cfg *config.Config, creds CredentialEngine) (Handler, error)
	// Components returns each component's own configuration as built
	// from cfg; a reload rebuilds a component when its configuration
	// differs (reflect.DeepEqual). Nil counts every reload as a change.
	Components func(cfg *config.Config) Components
	// Listen binds the IMDS listener with the configured hop limit.
	Listen func(addr string, hopLimit int) (net.Listener, error)
	// ListenMetrics binds the metrics listener.
	ListenMetrics func(addr string) (net.Listener, error)
	// MetricsRetry is how often a metrics address that another process
	// holds is tried again; 0 means DefaultMetricsRetry.
	MetricsRetry time.Duration
	// ForgetClosedFlows, when set, is called with the address of a
	// metadata listener that a reload closed, once at the close and once
	// more after forgetAgainAfter: it removes the connection-tracking
	// entries of ended flows redirected there, which would otherwise send
	// a client that reuses their source port to the closed port
	// (netredirect.ForgetClosedFlows).
	ForgetClosedFlows func(addr netip.AddrPort) (uint, error)
	// MetricsHandler serves /metrics; nil serves only /healthz.
	MetricsHandler http.Handler
	Notifier       Notifier
	// Watchdog is the interval at which to send WATCHDOG=1, 0 for none
	// (half of systemd's WATCHDOG_USEC).
	Watchdog time.Duration
	// Endpoint is the address clients use when the network is managed
	// (EndpointAddr); /healthz and the watchdog check that a request to it
	// reaches this process. "" skips that check.
	Endpoint string
	// ControlSocket is the unix socket `imds-shim status` reads; "" for none.
	ControlSocket string
	// Version is reported in status.
	Version string
	// ConnObserver, when set, hears of every metadata connection opened
	// and closed, and why (for metrics).
	ConnObserver ConnObserver
	// ConnContext, when set, derives each metadata connection's context
	// once, at accept (to identify the caller). It gets a *Conn, whose
	// socket it can query.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// OnCredentials, when set, is told which engine serves from now on: at
	// start and after every reload that changed it (for metrics).
	OnCredentials func(CredentialEngine)
	// AllowUnprivilegedPort, when set and true for a configuration, lets
	// the metadata listener use a port that any user may bind (at or above
	// net.ipv4.ip_unprivileged_port_start). Nil refuses such a port.
	AllowUnprivilegedPort func(cfg *config.Config) bool
	// UnprivilegedPortStart reads net.ipv4.ip_unprivileged_port_start;
	// nil reads it from /proc of this network namespace.
	UnprivilegedPortStart func() (int, error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Components are the configurations of the components a reload may
// rebuild, as the composition root builds them from the file. Network is
// nil when the network is not managed.
type Components struct {
	Credentials any
	Network     any
}

// Reload asks a running daemon to re-read its configuration; Run receives
// these on the channel it is given (SIGHUP in production).
type Reload struct{}

// Run is `imds-shim serve`: load and validate the config, clean up leftovers,
// fetch the first credentials, set up the network, bind the listener, tell
// systemd READY=1, then serve, refresh and reconcile until ctx is cancelled,
// re-reading the config on every value from reload. On return everything it
// installed has been removed. A start-up failure leaves nothing installed.
func Run(ctx context.Context, path string, deps Deps, reload <-chan Reload) (err error) {
	d := &daemon{deps: deps, path: path, log: deps.Log}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.deps.Now == nil {
		d.deps.Now = time.Now
	}
	if err := d.start(ctx); err != nil {
		d.notify("STATUS=start-up failed: " + oneLine(err))
		return err
	}
	d.log.Info("ready", "roles", roleList(d.cfg), "listen", addrsOf(d.lns), "network", d.cfg.ManageNetwork())
	d.notify("READY=1\nSTATUS=" + d.statusLine())
	d.loop(ctx, reload)
	return d.stop()
}

type daemon struct {
	deps Deps
	path string
	log  *slog.Logger

	mu      sync.Mutex // guards everything below against status readers
	cfg     *config.Config
	creds   CredentialEngine
	net     Network
	handler Handler
	// lns are the metadata listeners: imds.listen first, then the
	// others the network planned (the IPv6 endpoint).
	lns     []boundListener
	srv     *HTTPServer
	metrics *HTTPServer
	// metricsErr is why the metrics listener is not bound ("" when it is
	// or none is configured); metricsGen changes whenever the wanted
	// metrics listener does (reload, stop), which ends a retry loop.
	metricsErr string
	metricsGen uint64
	control    *HTTPServer
	started    time.Time
	reloads    int
	// reloadAttempts counts reloads finished, applied or rejected.
	reloadAttempts int
	lastErr        string // last rejected reload
	serveErr       chan error
	broken         atomic.Bool // a listener failed: stop feeding the watchdog
	prober         *prober

	// runs are the background loops of the current components.
	credsRun, netRun *runner
}

// runner is one background loop with its own cancel, so a reload can stop
// the old credential engine's refresh loop after the new one has taken over.
type runner struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Runners outlive the daemon's context: the stop sequence ends them
// explicitly, after the last request has been answered.
func startRunner(ctx context.Context, log *slog.Logger, what string, f func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &runner{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("background loop stopped", "loop", what, "err", err)
		}
	}()
	return r
}

func (r *runner) stop() {
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
}

func (d *daemon) switched(c CredentialEngine) {
	if d.deps.OnCredentials != nil {
		d.deps.OnCredentials(c)
	}
}

func (d *daemon) notify(state string) {
	if d.deps.Notifier == nil {
		return
	}
	if err := d.deps.Notifier.Notify(state); err != nil {
		d.log.Warn("notifying systemd", "err", err)
	}
}

// start runs the start-up sequence. On any failure it undoes what it did.
func (d *daemon) start(ctx context.Context) (err error) {
	d.started = d.deps.Now()
	d.notify("STATUS=loading " + d.path)
	cfg, err := d.deps.Load(d.path)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	d.cfg = cfg
	if err := d.checkPort(cfg); err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	if d.prober, err = newProber(); err != nil {
		return exitErr(ExitFailure, "%w", err)
	}

	// Build every component before touching anything, so that a problem
	// they can find on their own stops us while nothing is installed.
	creds, err := d.deps.NewCredentials(ctx, cfg)
	if err != nil {
		return exitErr(ExitConfig, "preparing credentials: %w", err)
	}
	handler, err := d.deps.NewHandler(cfg, creds)
	if err != nil {
		return exitErr(ExitConfig, "preparing the metadata API: %w", err)
	}
	var network Network
	if cfg.ManageNetwork() {
		if network, err = d.deps.NewNetwork(cfg); err != nil {
			return exitErr(ExitConfig, "preparing the network redirect: %w", err)
		}
	}

	d.notify("STATUS=removing leftovers of an earlier run")
	if err := d.deps.Cleanup(ctx); err != nil {
		return exitErr(ExitNetwork, "removing leftovers of an earlier run: %w", err)
	}

	d.notify("STATUS=fetching first credentials for " + roleList(cfg))
	fctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout.D())
	err = creds.Fetch(fctx)
	cancel()
	if err != nil {
		return exitErr(ExitCredentials, "fetching first credentials for %s within %s: %w", roleList(cfg), cfg.StartTimeout.D(), err)
	}

	if network != nil {
		d.notify("STATUS=setting up 169.254.169.254")
		if err := network.Setup(ctx); err != nil {
			// Setup removes what it added before it fails; Teardown
			// again in case it could not, so nothing stays behind.
			return exitErr(ExitNetwork, "setting up the network redirect: %w",
				errors.Join(err, network.Teardown(context.WithoutCancel(ctx))))
		}
		defer func() {
			if err != nil {
				err = errors.Join(err, network.Teardown(context.WithoutCancel(ctx)))
			}
		}()
	}

	// Every listener the redirect leads to, bound once Setup has put
	// the addresses in place and decided whether IPv6 is used.
	lns, _, err := d.bind(wantListeners(cfg, network), cfg.IMDS.HopLimit, nil)
	if err != nil {
		return exitErr(ExitNetwork, "%w", err)
	}
	defer func() {
		if err != nil {
			closeAll(lns)
		}
	}()

	var metrics *HTTPServer
	var metricsHeld error
	if addr := cfg.MetricsListen(); addr != "" {
		metrics, err = d.startMetrics(ctx, addr)
		if errors.Is(err, syscall.EADDRINUSE) {
			metricsHeld, err = err, nil // see metricsHeld
		}
		if err != nil {
			return exitErr(ExitNetwork, "binding the metrics listener %s: %w", addr, err)
		}
	}
	var control *HTTPServer
	if d.deps.ControlSocket != "" {
		if control, err = d.startControl(ctx); err != nil {
			if metrics != nil {
				metrics.Close()
			}
			return exitErr(ExitFailure, "opening the control socket: %w", err)
		}
	}

	d.mu.Lock()
	d.creds, d.handler, d.net, d.lns, d.metrics, d.control = creds, handler, network, lns, metrics, control
	d.srv = d.newAPIServer(ctx, handler)
	d.serveErr = make(chan error, 4)
	d.mu.Unlock()
	for _, b := range lns {
		d.serve(d.srv, b.ln)
	}
	if metricsHeld != nil {
		d.metricsHeld(ctx, cfg.MetricsListen(), metricsHeld)
	}
	d.switched(creds)
	d.credsRun = startRunner(ctx, d.log, "credentials", creds.Run)
	if network != nil {
		d.netRun = startRunner(ctx, d.log, "network", network.Run)
	}
	return nil
}

// newAPIServer serves the metadata API: a net/http.Server with APILimits.
func (d *daemon) newAPIServer(ctx context.Context, h http.Handler) *HTTPServer {
	return NewHTTPServer(d.prober.handler(h), APILimits, HTTPOptions{
		Log:         d.log.With("component", "http"),
		Observer:    d.deps.ConnObserver,
		BaseContext: context.WithoutCancel(ctx),
		ConnContext: d.deps.ConnContext,
	})
}

// serve runs srv on ln until the listener is closed.
func (d *daemon) serve(srv *HTTPServer, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); err != nil {
			d.serveErr <- fmt.Errorf("serving on %s: %w", ln.Addr(), err)
		}
	}()
}

// loop waits for reloads and the end.
func (d *daemon) loop(ctx context.Context, reload <-chan Reload) {
	if d.deps.Watchdog > 0 {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go d.watchdog(wctx)
	}
	status := time.NewTicker(30 * time.Second)
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			d.reload(ctx)
		case err := <-d.serveErr:
			d.log.Error("metadata listener failed", "err", err)
			d.broken.Store(true)
		case <-status.C:
			d.notify("STATUS=" + d.statusLine())
		}
	}
}

// watchdog sends WATCHDOG=1 while this process still answers on its
// listener and, with the network managed, through the endpoint. It runs apart from the loop so that a reload waiting for a new
// role's first credentials does not starve it. It deliberately ignores STS:
// restarting cannot fix an STS outage, and the last good credentials are
// still being served.
func (d *daemon) watchdog(ctx context.Context) {
	t := time.NewTicker(d.deps.Watchdog)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !d.broken.Load() && d.probe(ctx) == nil && d.probeEndpoint(ctx) == nil {
				d.notify("WATCHDOG=1")
			}
		}
	}
}

// probe checks that this process answers on each of its own listeners.
func (d *daemon) probe(ctx context.Context) error {
	d.mu.Lock()
	lns := d.lns
	d.mu.Unlock()
	for _, b := range lns {
		addr := b.ln.Addr().String()
		if err := d.prober.probe(ctx, addr); err != nil {
			d.log.Warn("probe of own listener failed", "addr", addr, "err", err)
			return fmt.Errorf("%s: %w", addr, err)
		}
	}
	return nil
}

// probeEndpoint checks, with the network managed, that requests to the
// endpoint reach this process (not a stale rule, another host, or another
// process holding the redirect target).
//
// The other listeners the network planned sit on the other endpoint
// addresses ([fd00:ec2::254] with IPv6), so each of those addresses is
// probed too, on the endpoint's port.
func (d *daemon) probeEndpoint(ctx context.Context) error {
	ep := d.deps.Endpoint
	if ep == "" || !d.managed() {
		return nil
	}
	eps := []string{ep}
	if ap, err := netip.ParseAddrPort(ep); err == nil {
		d.mu.Lock()
		lns := d.lns
		d.mu.Unlock()
		for _, b := range lns[1:] {
			eps = append(eps, netip.AddrPortFrom(b.addr.Addr(), ap.Port()).String())
		}
	}
	for _, ep := range eps {
		if err := d.prober.probe(ctx, ep); err != nil {
			d.log.Warn("probe through the endpoint failed", "endpoint", ep, "err", err)
			return fmt.Errorf("http://%s/ does not reach this imds-shim: %w", ep, err)
		}
	}
	return nil
}

// EndpointAddr is where clients reach the service when the network is
// managed; the production Deps.Endpoint.
const EndpointAddr = "169.254.169.254:80"

// stop is the orderly shutdown: stop accepting, let requests in flight
// finish within stop_timeout, stop the loops, remove the network.
func (d *daemon) stop() error {
	d.notify("STOPPING=1\nSTATUS=stopping")
	d.log.Info("stopping")
	d.mu.Lock()
	cfg, srv, metrics, control, network := d.cfg, d.srv, d.metrics, d.control, d.net
	d.metricsGen++ // a retry loop stops, and closes what it may just have bound
	d.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout.D())
	defer cancel()
	var errs []error
	if err := srv.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("finishing requests in flight: %w", err))
		srv.Close()
	}
	for _, s := range []*HTTPServer{metrics, control} {
		if s != nil {
			s.Close()
		}
	}
	d.credsRun.stop()
	d.netRun.stop()
	if network != nil {
		if err := network.Teardown(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("tearing down the network redirect: %w", err))
		}
	}
	if d.deps.ControlSocket != "" {
		os.Remove(d.deps.ControlSocket)
	}
	if len(errs) > 0 {
		return &ExitError{Code: ExitFailure, Err: errors.Join(errs...)}
	}
	d.log.Info("stopped")
	return nil
}

func (d *daemon) statusLine() string {
	d.mu.Lock()
	metricsErr := d.metricsErr
	d.mu.Unlock()
	if metricsErr != "" {
		return d.credentialsLine() + "; no metrics: " + oneLine(errors.New(metricsErr))
	}
	return d.credentialsLine()
}

func (d *daemon) credentialsLine() string {
	d.mu.Lock()
	cfg, creds := d.cfg, d.creds
	d.mu.Unlock()
	c, err := creds.Current()
	if err != nil {
		return fmt.Sprintf("serving %s; no valid credentials: %s", roleNames(cfg), oneLine(err))
	}
	if f, ok := creds.(failingReporter); ok {
		if failing := f.Failing(); len(failing) > 0 {
			return fmt.Sprintf("serving %s; %d failing: %s", roleNames(cfg), len(failing), oneLine(errors.New(strings.Join(failing, "; "))))
		}
	}
	if len(cfg.Roles) > 0 {
		return fmt.Sprintf("serving %s", roleNames(cfg))
	}
	return fmt.Sprintf("serving %s; credentials expire %s", cfg.RoleARN.Name, c.Expires.UTC().Format(time.RFC3339))
}

// failingReporter is an engine that can name the roles it cannot serve
// (credentials.Set), for /healthz and the status line.
type failingReporter interface{ Failing() []string }

// roleList names every configured role by ARN, for logs.
func roleList(cfg *config.Config) string {
	var s []string
	if !cfg.RoleARN.IsZero() {
		s = append(s, cfg.RoleARN.String())
	}
	for _, r := range cfg.Roles {
		if a := r.RoleARN.String(); !slices.Contains(s, a) {
			s = append(s, a)
		}
	}
	return strings.Join(s, ", ")
}

// roleNames names every configured role by name, for the status line.
func roleNames(cfg *config.Config) string {
	var s []string
	if !cfg.RoleARN.IsZero() {
		s = append(s, cfg.RoleARN.Name)
	}
	for _, r := range cfg.Roles {
		if !slices.Contains(s, r.RoleARN.Name) {
			s = append(s, r.RoleARN.Name)
		}
	}
	return strings.Join(s, ", ")
}

// roleName is the role's name as clients see it under security-credentials/.
func roleName(arn string) string {
	if r, err := credentials.ParseRoleARN(arn); err == nil {
		return r.Name
	}
	return arn
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", ";")
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imds-shim/imds-shim/pkg/callers"
	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
	"github.com/imds-shim/imds-shim/pkg/imds"
	"github.com/imds-shim/imds-shim/pkg/netredirect"
)

// This file is the composition root: the one place that turns the validated
// configuration model (pkg/config) into each component's own Config, and
// connects the real components to the daemon.

func credentialsConfig(c *config.Config) credentials.Config {
	return assumeConfig(c, c.RoleARN, c.AssumeRole)
}

// assumeConfig is the refresher configuration of one role with its
// AssumeRole options (the top level's, or a roles entry's with the top
// level's filled in by pkg/config).
func assumeConfig(c *config.Config, role awsarn.Role, a config.AssumeRole) credentials.Config {
	cc := credentials.Config{
		RoleARN: role.String(), SessionName: a.SessionName, Duration: a.Duration.D(), ExternalID: a.ExternalID,
		Policy: a.Policy, PolicyARNs: a.PolicyARNs, Tags: a.Tags, TransitiveTagKeys: a.TransitiveTagKeys,
		SourceIdentity: a.SourceIdentity, Region: c.Region, STSEndpoint: c.STSEndpoint, Profile: c.Profile,
		CredentialsFile: c.CredentialsFile, ConfigFile: c.ConfigFile, WebIdentityTokenFile: c.WebIdentityTokenFile,
	}
	if cc.SessionName == "" {
		host, _ := os.Hostname()
		cc.SessionName = credentials.DefaultSessionName(host)
	}
	return cc
}

// defaultRoleKey is the Set's key of the top-level role_arn.
const defaultRoleKey = "role_arn"

// credentialRoles lists the credential sets of c: the top-level role (if
// any) and each roles entry, keyed by their YAML key. Source is the source
// files' digest, so that a rotated key builds new refreshers on reload.
func credentialRoles(c *config.Config) []credentials.Role {
	var out []credentials.Role
	if !c.RoleARN.IsZero() {
		out = append(out, credentials.Role{Key: defaultRoleKey, Config: credentialsConfig(c), Source: c.SourceFingerprint})
	}
	for i, r := range c.Roles {
		out = append(out, credentials.Role{
			Key: fmt.Sprintf("roles[%d]", i), Config: assumeConfig(c, r.RoleARN, r.AssumeRole), Source: c.SourceFingerprint,
			PerCaller: r.CallerSourceIdentity, MaxCallers: r.MaxCallerSessions,
		})
	}
	return out
}

// callerPolicy is the caller table of c; nil without roles, when every
// caller gets the top-level role as before.
func callerPolicy(c *config.Config) (*callers.Policy, error) {
	if len(c.Roles) == 0 {
		return nil, nil
	}
	entries := make([]callers.Entry, len(c.Roles))
	for i, r := range c.Roles {
		entries[i] = callers.Entry{Role: fmt.Sprintf("roles[%d]", i), Units: r.Units, Users: r.Users, Groups: r.Groups, Sources: r.Sources}
	}
	def := callers.Default{Unidentified: c.Unidentified == "default"}
	if !c.RoleARN.IsZero() {
		def.Role = defaultRoleKey
	}
	return callers.NewPolicy(entries, def)
}

// imdsConfig builds the handler's configuration. It reads
// metadata.user_data_file, the one input that is not in the file itself.
func imdsConfig(c *config.Config) (imds.Config, error) {
	m := c.Metadata
	ic := imds.Config{
		RoleARN: c.RoleARN.String(), TokenMode: imds.TokenMode(c.IMDS.Tokens), HopLimit: c.IMDS.HopLimit,
		AllowedCIDRs: c.ServedSources(), Region: c.Region, AvailabilityZone: m.AvailabilityZone,
		AvailabilityZoneID: m.AvailabilityZoneID, Domain: m.Domain, InstanceID: m.InstanceID, ImageID: m.AMIID,
		InstanceType: m.InstanceType, Hostname: m.Hostname, LocalHostname: m.LocalHostname, LocalIPv4: m.LocalIPv4,
		MAC: m.MAC, Architecture: m.Architecture, InstanceProfileARN: m.InstanceProfileARN, Tags: m.Tags,
		MetadataDir: c.IMDS.MetadataDir, PublicKeys: m.PublicKeys, ReservationID: m.ReservationID,
		SecurityGroups: m.SecurityGroups, RootDeviceName: m.RootDeviceName,
	}
	for _, r := range c.Roles {
		ic.Roles = append(ic.Roles, r.RoleARN.String())
	}
	if m.UserData != "" {
		ic.UserData = []byte(m.UserData)
	}
	if m.UserDataFile != "" {
		b, err := readCapped(m.UserDataFile, config.MaxUserData)
		if err != nil {
			return ic, fmt.Errorf("metadata.user_data_file: %w", err)
		}
		ic.UserData = b
	}
	return ic, nil
}

func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, limit)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

func networkConfig(c *config.Config) netredirect.Config {
	return netredirect.Config{
		Link: c.Network.Link, Backend: c.Network.Backend, Target: c.IMDS.Listen,
		ReconcileInterval: c.Network.ReconcileInterval.D(), Containers: c.Network.Containers, IPv6: c.Network.IPv6,
	}.WithDefaults()
}

// components are what reload compares to decide which components to
// rebuild: each component's own Config, built by the functions above.
func components(c *config.Config) daemon.Components {
	comp := daemon.Components{
		// Every credential set and the caller table: a change builds a
		// new Set, which keeps the refreshers whose Role is unchanged.
		// Each Role carries the source files' digest: the SDK reads them
		// once per client, so a rotated key in an unchanged path is a
		// change too.
		Credentials: struct {
			Roles        []credentials.Role
			Matchers     []config.Role
			Unidentified string
		}{credentialRoles(c), c.Roles, c.Unidentified},
	}
	if c.ManageNetwork() {
		comp.Network = networkConfig(c)
	}
	return comp
}

// loadConfig reads and validates the file once, then checks what only the
// other packages can check (user_data_file's contents, metadata_dir), so
// that one `check` lists every problem, each once.
func loadConfig(path string) (*config.Config, error) {
	c, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	var errs []error
	if ic, err := imdsConfig(c); err != nil {
		errs = append(errs, err)
	} else if ic.MetadataDir != "" {
		// Building a server reads metadata_dir as serve will, so a
		// missing or bad directory fails check and a reload up front.
		if _, err := imds.NewServer(ic, noCredentials{}, imds.Options{}); err != nil {
			errs = append(errs, fmt.Errorf("imds.metadata_dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.SourceFingerprint = sourceFingerprint(c)
	return c, nil
}

// noCredentials stands in for the engine where only the handler's
// configuration is being checked.
type noCredentials struct{}

func (noCredentials) Current() (credentials.Credentials, error) {
	return credentials.Credentials{}, credentials.ErrNoCredentials
}

// sourceFingerprint digests the files the SDK reads source credentials
// from. The SDK reads them once per client, so a rotated key in an
// unchanged path must still count as a change on reload.
func sourceFingerprint(c *config.Config) string {
	if fp, ok := rolesAnywhereFingerprint(c); ok {
		return fp
	}
	files := []string{c.CredentialsFile, c.ConfigFile}
	if home, err := os.UserHomeDir(); err == nil {
		if files[0] == "" {
			files[0] = filepath.Join(home, ".aws", "credentials")
		}
		if files[1] == "" {
			files[1] = filepath.Join(home, ".aws", "config")
		}
	}
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		fmt.Fprintf(h, "%s %t %d\n", f, err == nil, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// handler adapts *imds.Server to daemon.Handler.
type handler struct{ *imds.Server }

func (h handler) Update(c *config.Config, creds daemon.CredentialEngine) error {
	ic, err := imdsConfig(c)
	if err != nil {
		return err
	}
	return h.Server.Update(ic, handlerSource(c, creds))
}

// handlerSource is what the handler reads credentials from: with roles, a
// per-caller view of the Set; without, the engine itself, as before.
func handlerSource(c *config.Config, creds daemon.CredentialEngine) imds.CredentialSource {
	if set, ok := creds.(*credentials.Set); ok && len(c.Roles) > 0 {
		return perCaller{set}
	}
	return creds
}

// perCaller implements imds.Roles: the request's caller, identified once
// per connection, gets the role the Set's policy gives it, looked up once
// per connection and Set (a reload that changes the roles builds a new
// Set).
type perCaller struct{ set *credentials.Set }

func (p perCaller) Current() (credentials.Credentials, error) { return p.set.Current() }

func (p perCaller) RoleFor(r *http.Request) (string, imds.CredentialSource, bool) {
	id := identifiedOf(r.Context())
	rl := id.role.Load()
	if rl == nil || rl.set != p.set {
		arn, src, ok := p.set.For(id.caller)
		rl = &callerRole{set: p.set, arn: arn, src: src, ok: ok}
		id.role.Store(rl)
	}
	if !rl.ok {
		return "", nil, false
	}
	return rl.arn, rl.src, true
}

// lazyCaller is the context key of a connection's identification.
type lazyCaller struct{}

// identifyLazily is the API server's ConnContext. net/http calls
// ConnContext in its accept loop, so identifying there would make every
// cache miss's cgroup walk delay accepting; instead the context carries a
// function that identifies the connection once, in the connection's own
// goroutine, on the first request that needs it (a token, a role).
func identifyLazily(id *callers.Identifier) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, lazyCaller{}, sync.OnceValue(func() *identified {
			caller := id.Identify(c)
			return &identified{caller: caller, key: caller.Key()}
		}))
	}
}

// identified is a connection's caller and its key, computed once, and the
// role it got from the Set that served its last request.
type identified struct {
	caller callers.Caller
	key    string
	role   atomic.Pointer[callerRole]
}

// callerRole is what a Set's For gave a caller.
type callerRole struct {
	set *credentials.Set
	arn string
	src *credentials.Source
	ok  bool
}

// notIdentified stands for every request without a connection identity;
// they all are the same caller, so they may share what For gave it.
var notIdentified = &identified{caller: callers.Caller{Reason: "not identified"}, key: callers.Caller{}.Key()}

// identifiedOf returns the identity of a request's connection; an
// unidentified caller when the connection was not identified (never
// someone else).
func identifiedOf(ctx context.Context) *identified {
	if f, ok := ctx.Value(lazyCaller{}).(func() *identified); ok {
		return f()
	}
	return notIdentified
}

// tokenBinding binds IMDSv2 tokens to the caller's identity (its uid and
// unit, or a container's address), roles or not: a token that leaks to
// another user or service is refused with 401.
func tokenBinding(r *http.Request) string { return identifiedOf(r.Context()).key }

// network adapts *netredirect.Redirector to daemon.Network and StatusReporter.
type network struct{ *netredirect.Redirector }

func (n network) Status(ctx context.Context) (any, error) { return n.Redirector.Status(ctx) }

// newCredentials builds the Set of c's roles; prev is the running one on a
// reload (its unchanged refreshers are kept), nil at start.
func newCredentials(ctx context.Context, c *config.Config, log *slog.Logger, m *metrics, prev *credentials.Set) (*credentials.Set, error) {
	pol, err := callerPolicy(c)
	if err != nil {
		return nil, err
	}
	clients := new(credentials.STSClients) // every role of c has c's source
	return credentials.NewSet(ctx, credentialRoles(c), credentials.SetOptions{
		Options:     credentials.Options{Logger: log.With("component", "credentials")},
		NewObserver: m.roleObserver,
		Policy:      pol,
		Previous:    prev,
		AuditLog:    log, // the line reads "caller uid=… unit=… role=… access_key_id=…"
		NewClient: func(ctx context.Context, cc credentials.Config) (credentials.STSAPI, error) {
			return stsClientFor(ctx, cc, c, clients)
		},
	})
}

// productionDeps connects the real components. first and firstErr are the
// result of reading the file at start, which serve did once already to set
// up logging; the daemon's first Load returns them, and every reload reads
// the file again.
func productionDeps(log *slog.Logger, logs *logging, rtDir string, first *config.Config, firstErr error) (daemon.Deps, error) {
	m := newMetrics(version)
	sharedRolesAnywhere.attach(log, m.reg)
	key, err := []byte(nil), os.MkdirAll(rtDir, 0o700)
	if err == nil {
		key, err = imds.LoadOrCreateTokenKey(filepath.Join(rtDir, "token.key"))
	}
	if err != nil {
		// Tokens then live only as long as this process.
		log.Warn("keeping the token key in memory only", "runtime_dir", rtDir, "err", err)
		key = nil
	}
	var loaded atomic.Bool
	var running atomic.Pointer[credentials.Set] // the Set serving now
	id := callers.NewIdentifier()
	return daemon.Deps{
		Log:          log,
		ConnObserver: m,
		Load: func(path string) (*config.Config, error) {
			c, err := first, firstErr
			if !loaded.Swap(true) {
				first, firstErr = nil, nil
			} else {
				c, err = loadConfig(path)
			}
			if err == nil {
				logs.setLevel(c.Log.Level)
				logWarnings(log, c, path)
			}
			return c, err
		},
		Cleanup: func(ctx context.Context) error {
			return netredirect.Cleanup(ctx, log.With("component", "netredirect"))
		},
		NewCredentials: func(ctx context.Context, c *config.Config) (daemon.CredentialEngine, error) {
			return newCredentials(ctx, c, log, m, running.Load())
		},
		Components: components,
		NewNetwork: func(c *config.Config) (daemon.Network, error) {
			r, err := netredirect.New(networkConfig(c), netredirect.Options{Logger: log.With("component", "netredirect"), Observer: m})
			if err != nil {
				return nil, err
			}
			return network{r}, nil
		},
		NewHandler: func(c *config.Config, creds daemon.CredentialEngine) (daemon.Handler, error) {
			ic, err := imdsConfig(c)
			if err != nil {
				return nil, err
			}
			s, err := imds.NewServer(ic, handlerSource(c, creds), imds.Options{Logger: log.With("component", "imds"), Observer: m, TokenKey: key, TokenBinding: tokenBinding})
			if err != nil {
				return nil, err
			}
			return handler{s}, nil
		},
		Listen: func(addr string, hop int) (net.Listener, error) {
			return imds.Listen("tcp", addr, hop)
		},
		AllowUnprivilegedPort: func(c *config.Config) bool { return c.IMDS.AllowUnprivilegedPort },
		ForgetClosedFlows:     netredirect.ForgetClosedFlows,
		MetricsHandler:        promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}),
		OnCredentials: func(e daemon.CredentialEngine) {
			if s, ok := e.(*credentials.Set); ok {
				running.Store(s)
				m.setSet(s)
			}
		},
		ConnContext:   identifyLazily(id),
		Notifier:      daemon.SystemdNotifier{},
		Watchdog:      daemon.WatchdogInterval(),
		Endpoint:      daemon.EndpointAddr,
		ControlSocket: filepath.Join(rtDir, "control.sock"),
		Version:       version,
	}, nil
}

// logWarnings logs what check prints as warnings: weak settings and
// credential files other users can read.
func logWarnings(log *slog.Logger, c *config.Config, path string) {
	for _, w := range c.Warnings() {
		log.Warn(w.Msg, "key", w.Key, "config", path)
	}
	for _, w := range c.FileWarnings(path) {
		log.Warn("file permissions: "+w, "config", path)
	}
	if pol, err := callerPolicy(c); err == nil && pol != nil {
		for _, u := range pol.Unresolved() {
			log.Warn(u, "config", path)
		}
		if l := callers.DetectLayout(); !l.Units() && pol.UsesUnits() {
			log.Warn("roles: units entries match nothing on this host: "+l.Describe(), "config", path)
		}
	}
}

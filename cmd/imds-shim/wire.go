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
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
	"github.com/imds-shim/imds-shim/pkg/imds"
	"github.com/imds-shim/imds-shim/pkg/netredirect"
)

// This file is the composition root: the one place that turns the validated
// configuration model (pkg/config) into each component's own Config, and
// connects the real components to the daemon.

func credentialsConfig(c *config.Config) credentials.Config {
	cc := credentials.Config{
		RoleARN: c.RoleARN.String(), SessionName: c.SessionName, Duration: c.Duration.D(), ExternalID: c.ExternalID,
		Policy: c.Policy, PolicyARNs: c.PolicyARNs, Tags: c.Tags, TransitiveTagKeys: c.TransitiveTagKeys,
		SourceIdentity: c.SourceIdentity, Region: c.Region, STSEndpoint: c.STSEndpoint, Profile: c.Profile,
		CredentialsFile: c.CredentialsFile, ConfigFile: c.ConfigFile, WebIdentityTokenFile: c.WebIdentityTokenFile,
	}
	if cc.SessionName == "" {
		host, _ := os.Hostname()
		cc.SessionName = credentials.DefaultSessionName(host)
	}
	return cc
}

// imdsConfig builds the handler's configuration. It reads
// metadata.user_data_file, the one input that is not in the file itself.
func imdsConfig(c *config.Config) (imds.Config, error) {
	m := c.Metadata
	ic := imds.Config{
		RoleARN: c.RoleARN.String(), TokenMode: imds.TokenMode(c.IMDS.Tokens), HopLimit: c.IMDS.HopLimit,
		AllowedCIDRs: c.IMDS.AllowedCIDRs, Region: c.Region, AvailabilityZone: m.AvailabilityZone,
		AvailabilityZoneID: m.AvailabilityZoneID, Domain: m.Domain, InstanceID: m.InstanceID, ImageID: m.AMIID,
		InstanceType: m.InstanceType, Hostname: m.Hostname, LocalHostname: m.LocalHostname, LocalIPv4: m.LocalIPv4,
		MAC: m.MAC, Architecture: m.Architecture, InstanceProfileARN: m.InstanceProfileARN, Tags: m.Tags,
		MetadataDir: c.IMDS.MetadataDir, PublicKeys: m.PublicKeys, ReservationID: m.ReservationID,
		SecurityGroups: m.SecurityGroups, RootDeviceName: m.RootDeviceName,
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
		// The SDK reads the source files once per client, so a rotated
		// key in an unchanged path is a change too.
		Credentials: struct {
			credentials.Config
			Fingerprint string
		}{credentialsConfig(c), c.SourceFingerprint},
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
	return h.Server.Update(ic, creds)
}

// network adapts *netredirect.Redirector to daemon.Network and StatusReporter.
type network struct{ *netredirect.Redirector }

func (n network) Status(ctx context.Context) (any, error) { return n.Redirector.Status(ctx) }

func newCredentials(ctx context.Context, c *config.Config, log *slog.Logger, m *metrics) (*credentials.Refresher, error) {
	cc := credentialsConfig(c)
	client, err := credentials.NewSTSClient(ctx, cc)
	if err != nil {
		return nil, err
	}
	return credentials.New(cc, client, credentials.Options{Logger: log.With("component", "credentials"), Observer: m})
}

// productionDeps connects the real components. first and firstErr are the
// result of reading the file at start, which serve did once already to set
// up logging; the daemon's first Load returns them, and every reload reads
// the file again.
func productionDeps(log *slog.Logger, logs *logging, rtDir string, first *config.Config, firstErr error) (daemon.Deps, error) {
	m := newMetrics(version)
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
			return newCredentials(ctx, c, log, m)
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
			s, err := imds.NewServer(ic, creds, imds.Options{Logger: log.With("component", "imds"), Observer: m, TokenKey: key})
			if err != nil {
				return nil, err
			}
			return handler{s}, nil
		},
		Listen: func(addr string, hop int) (net.Listener, error) {
			return imds.Listen("tcp", addr, hop)
		},
		AllowUnprivilegedPort: func(c *config.Config) bool { return c.IMDS.AllowUnprivilegedPort },
		MetricsHandler:        promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}),
		OnCredentials:         m.setEngine,
		Notifier:              daemon.SystemdNotifier{},
		Watchdog:              daemon.WatchdogInterval(),
		Endpoint:              daemon.EndpointAddr,
		ControlSocket:         filepath.Join(rtDir, "control.sock"),
		Version:               version,
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
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
	"github.com/imds-shim/imds-shim/pkg/imds"
	"github.com/imds-shim/imds-shim/pkg/netredirect"
)

// This file is the composition root: it turns the one YAML file into each
// package's own Config and connects the real components to the daemon.

func credentialsConfig(c *config.Config) credentials.Config {
	cc := credentials.Config{
		RoleARN: c.RoleARN, SessionName: c.SessionName, Duration: c.Duration.D(), ExternalID: c.ExternalID,
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

// maxUserData is EC2's limit on user data.
const maxUserData = 16 << 10

func imdsConfig(c *config.Config) (imds.Config, error) {
	m := c.Metadata
	ic := imds.Config{
		RoleARN: c.RoleARN, TokenMode: imds.TokenMode(c.IMDS.Tokens), HopLimit: c.IMDS.HopLimit,
		Region: c.Region, AvailabilityZone: m.AvailabilityZone, AvailabilityZoneID: m.AvailabilityZoneID,
		Domain: m.Domain, InstanceID: m.InstanceID, ImageID: m.AMIID, InstanceType: m.InstanceType,
		Hostname: m.Hostname, LocalHostname: m.LocalHostname, MAC: m.MAC, Architecture: m.Architecture,
		InstanceProfileARN: m.InstanceProfileARN, Tags: m.Tags, MetadataDir: c.IMDS.MetadataDir,
	}
	var errs []error
	for i, s := range c.IMDS.AllowedCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("imds.allowed_cidrs[%d]: %q is not a CIDR prefix", i, s))
			continue
		}
		ic.AllowedCIDRs = append(ic.AllowedCIDRs, p)
	}
	if m.LocalIPv4 != "" {
		a, err := netip.ParseAddr(m.LocalIPv4)
		if err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("metadata.local_ipv4: %q is not an IPv4 address", m.LocalIPv4))
		}
		ic.LocalIPv4 = a
	}
	if m.UserData != "" {
		ic.UserData = []byte(m.UserData)
	}
	if m.UserDataFile != "" {
		b, err := readCapped(m.UserDataFile, maxUserData)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata.user_data_file: %w", err))
		}
		ic.UserData = b
	}
	if len(ic.UserData) > maxUserData {
		errs = append(errs, fmt.Errorf("metadata.user_data: %d bytes is more than EC2's 16 KiB", len(ic.UserData)))
	}
	return ic, errors.Join(errs...)
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
	b := make([]byte, st.Size())
	_, err = f.Read(b)
	if st.Size() == 0 {
		err = nil
	}
	return b, err
}

func networkConfig(c *config.Config) (netredirect.Config, error) {
	target, err := netip.ParseAddrPort(c.IMDS.Listen)
	if err != nil {
		return netredirect.Config{}, fmt.Errorf("imds.listen: %w", err)
	}
	return netredirect.Config{
		Link: c.Network.Link, Backend: c.Network.Backend, Target: target,
		ReconcileInterval: c.Network.ReconcileInterval.D(),
	}.WithDefaults(), nil
}

// loadConfig reads the file and validates it with every package's own
// rules, so that one `check` lists every problem, each once.
func loadConfig(path string) (*config.Config, error) {
	c, err := config.LoadUnvalidated(path)
	if err != nil {
		return nil, err
	}
	cfgErr := c.Validate()
	cc := credentialsConfig(c)
	credErr := cc.Validate()
	errs := []error{cfgErr, credErr}
	// The API and network packages check role_arn, imds.tokens and
	// imds.listen again; substitute valid stand-ins for values already
	// reported, so that their other findings still show and nothing shows
	// twice.
	v := *c
	if credErr != nil {
		v.RoleARN = "arn:aws:iam::123456789012:role/stand-in"
	}
	if cfgErr != nil {
		d, _ := config.Decode([]byte("role_arn: x\n"))
		v.IMDS.Listen, v.IMDS.Tokens, v.IMDS.HopLimit = d.IMDS.Listen, d.IMDS.Tokens, d.IMDS.HopLimit
		v.Network = d.Network
		v.IMDS.AllowedCIDRs = nil
	}
	if ic, err := imdsConfig(&v); err != nil {
		errs = append(errs, err)
	} else if err := ic.Validate(); err != nil {
		errs = append(errs, err)
	} else if ic.MetadataDir != "" {
		// Building a server reads metadata_dir as serve will, so a
		// missing or bad directory fails check and a reload up front.
		if _, err := imds.NewServer(ic, noCredentials{}, imds.Options{}); err != nil {
			errs = append(errs, fmt.Errorf("imds.metadata_dir: %w", err))
		}
	}
	if v.ManageNetwork() {
		nc, err := networkConfig(&v)
		if err == nil {
			err = nc.Validate()
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, dedupe(err))
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

// dedupe drops a problem whose key was already reported.
func dedupe(err error) error {
	seen := map[string]bool{}
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		key, _, ok := strings.Cut(line, ": ")
		if ok && seen[key] && !strings.ContainsAny(key, " ") {
			continue
		}
		seen[key] = true
		out = append(out, errors.New(line))
	}
	return errors.Join(out...)
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

func productionDeps(log *slog.Logger, logs *logging, rtDir string) (daemon.Deps, error) {
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
	return daemon.Deps{
		Log:          log,
		ConnObserver: m,
		Load: func(path string) (*config.Config, error) {
			c, err := loadConfig(path)
			if err == nil {
				logs.setLevel(c.Log.Level)
			}
			return c, err
		},
		Cleanup: func(ctx context.Context) error {
			return netredirect.Cleanup(ctx, log.With("component", "netredirect"))
		},
		NewCredentials: func(ctx context.Context, c *config.Config) (daemon.CredentialEngine, error) {
			return newCredentials(ctx, c, log, m)
		},
		NewNetwork: func(c *config.Config) (daemon.Network, error) {
			nc, err := networkConfig(c)
			if err != nil {
				return nil, err
			}
			r, err := netredirect.New(nc, netredirect.Options{Logger: log.With("component", "netredirect"), Observer: m})
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
		MetricsHandler: promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}),
		OnCredentials:  m.setEngine,
		Notifier:       daemon.SystemdNotifier{},
		Watchdog:       daemon.WatchdogInterval(),
		Endpoint:       daemon.EndpointAddr,
		ControlSocket:  filepath.Join(rtDir, "control.sock"),
		Version:        version,
	}, nil
}

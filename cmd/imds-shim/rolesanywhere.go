package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imds-shim/imds-shim/pkg/config"
	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// The roles_anywhere source, wired: the engine's configuration built from
// the file, the one *credentials.RolesAnywhere the daemon shares between
// every served role's STS client, the certificate expiry gauge, and what
// `imds-shim check` prints about the certificate.
//
// Rotation needs neither a restart nor a reload: the engine reads the
// certificate and key again for every CreateSession, so the certificate
// files' contents are deliberately not part of sourceFingerprint (see
// rolesAnywhereFingerprint).

// rolesAnywhereConfig builds the engine's configuration from the file; ok is
// false when roles_anywhere is not configured. The region is the trust
// anchor's, which the engine derives from its ARN.
func rolesAnywhereConfig(c *config.Config) (cfg credentials.RolesAnywhereConfig, ok bool) {
	ra := c.RolesAnywhere
	if ra == nil {
		return credentials.RolesAnywhereConfig{}, false
	}
	return credentials.RolesAnywhereConfig{
		CertificateFile: ra.Certificate, PrivateKeyFile: ra.PrivateKey,
		TrustAnchorARN: ra.TrustAnchorARN.ARN, ProfileARN: ra.ProfileARN.ARN, RoleARN: ra.RoleARN.String(),
		Endpoint: ra.Endpoint, Duration: ra.Duration.D(),
	}, true
}

// rolesAnywhereFingerprint is sourceFingerprint with roles_anywhere, the
// Source of every credential Role: a digest of the block (which files, ARNs,
// endpoint, duration), so that a changed block builds new refreshers on
// reload, and deliberately not of the files' contents — the engine reads
// them again at every refresh, so a renewed certificate needs no reload and
// must not rebuild every refresher. The SDK's shared files play no part
// with this source.
func rolesAnywhereFingerprint(c *config.Config) (string, bool) {
	rc, ok := rolesAnywhereConfig(c)
	if !ok {
		return "", false
	}
	b, err := json.Marshal(rc)
	if err != nil {
		panic(err) // strings and a duration
	}
	sum := sha256.Sum256(b)
	return "roles_anywhere:" + hex.EncodeToString(sum[:]), true
}

// sharedRolesAnywhere is the daemon's one Roles Anywhere source. Every
// chained role signs its AssumeRole with the source's cached session, so
// they must share one source to share one CreateSession; a reload that
// changes roles_anywhere replaces it, and the engines built before keep the
// source they were built with until they are discarded.
var sharedRolesAnywhere rolesAnywhereSource

type rolesAnywhereSource struct {
	mu  sync.Mutex
	log *slog.Logger
	cfg credentials.RolesAnywhereConfig
	ra  *credentials.RolesAnywhere
}

// attach gives the source the daemon's logger (for the engine's warning
// from 7 days before the certificate expires) and registers
// imds_shim_certificate_expiry_seconds, which is exported while
// roles_anywhere is configured.
func (s *rolesAnywhereSource) attach(log *slog.Logger, reg prometheus.Registerer) {
	s.mu.Lock()
	s.log = log.With("component", "rolesanywhere")
	s.ra = nil // rebuilt with the logger
	s.mu.Unlock()
	reg.MustRegister(s)
}

// get returns the source for cfg, building it when cfg differs from the
// current one's.
func (s *rolesAnywhereSource) get(cfg credentials.RolesAnywhereConfig) (*credentials.RolesAnywhere, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ra != nil && s.cfg == cfg {
		return s.ra, nil
	}
	ra, err := credentials.NewRolesAnywhere(cfg, credentials.RolesAnywhereOptions{Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.cfg, s.ra = cfg, ra
	return ra, nil
}

// current is the source last built, nil when roles_anywhere is not
// configured.
func (s *rolesAnywhereSource) current() *credentials.RolesAnywhere {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ra
}

// forget drops the source when a configuration without roles_anywhere is
// in use, so the gauge disappears with it.
func (s *rolesAnywhereSource) forget() {
	s.mu.Lock()
	s.ra, s.cfg = nil, credentials.RolesAnywhereConfig{}
	s.mu.Unlock()
}

var certExpiryDesc = prometheus.NewDesc("imds_shim_certificate_expiry_seconds",
	"Seconds until the roles_anywhere certificate (the leaf, read from its file now) expires; negative once expired. "+
		"Exported only while roles_anywhere is configured and the file is readable.", nil, nil)

// Describe implements prometheus.Collector.
func (s *rolesAnywhereSource) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

// Collect implements prometheus.Collector: the certificate file is read at
// each scrape (not the key), so the gauge follows a rotation at once.
func (s *rolesAnywhereSource) Collect(ch chan<- prometheus.Metric) {
	ra := s.current()
	if ra == nil {
		return
	}
	now := time.Now()
	rep, err := ra.CertificateStatus(now)
	if err != nil {
		// The refresh reports it (class certificate); an absent series
		// is what an alert on absent() catches.
		return
	}
	ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, rep.ExpirySeconds(now))
}

// stsClientFor returns the STS client a served role's engine calls: with
// roles_anywhere, one backed by the shared source (CreateSession for
// roles_anywhere.role_arn itself, STS AssumeRole signed with the Roles
// Anywhere session for every other role); otherwise the SDK's chain,
// loaded once by clients for all the roles of c.
func stsClientFor(ctx context.Context, cc credentials.Config, c *config.Config, clients *credentials.STSClients) (credentials.STSAPI, error) {
	rc, ok := rolesAnywhereConfig(c)
	if !ok {
		sharedRolesAnywhere.forget()
		return clients.Client(ctx, cc)
	}
	ra, err := sharedRolesAnywhere.get(rc)
	if err != nil {
		return nil, err
	}
	return credentials.NewRolesAnywhereSTSClient(ctx, cc, ra)
}

// expiresIn says how long a certificate has left, in days and hours.
func expiresIn(d time.Duration) string {
	if d <= 0 {
		return "EXPIRED"
	}
	days, hours := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if days == 0 {
		return fmt.Sprintf("expires in %s", d.Round(time.Minute))
	}
	return fmt.Sprintf("expires in %dd %dh", days, hours)
}

// servedRoles lists the roles the file serves, by key, the top-level role
// first.
func servedRoles(c *config.Config) [][2]string {
	var out [][2]string
	if !c.RoleARN.IsZero() {
		out = append(out, [2]string{"role_arn", c.RoleARN.String()})
	}
	for i, r := range c.Roles {
		out = append(out, [2]string{fmt.Sprintf("roles[%d]", i), r.RoleARN.String()})
	}
	return out
}

// checkRolesAnywhere prints what `imds-shim check` learns about the
// roles_anywhere source: the certificate (subject, serial, issuer chain,
// key type, expiry) and its warnings, and which served roles are served
// from CreateSession directly and which are chained (capped at 1 hour by
// AWS). It never prints the private key, only its path. A certificate or
// key that serve could not use is an error: the exit code is then
// daemon.ExitCredentials, as serve's would be; 0 otherwise, and when
// roles_anywhere is not configured.
func checkRolesAnywhere(stdout, stderr io.Writer, c *config.Config) int {
	rc, ok := rolesAnywhereConfig(c)
	if !ok {
		return 0
	}
	ra := c.RolesAnywhere
	endpoint := ra.Endpoint
	if src, err := credentials.NewRolesAnywhere(rc, credentials.RolesAnywhereOptions{}); err == nil {
		endpoint = src.Endpoint()
	}
	fmt.Fprintf(stdout, "source:    roles_anywhere: CreateSession at %s for %s\n", endpoint, ra.RoleARN)
	fmt.Fprintf(stdout, "           trust anchor %s\n", ra.TrustAnchorARN.ARN)
	fmt.Fprintf(stdout, "           profile      %s\n", ra.ProfileARN.ARN)
	now := time.Now()
	rep, err := credentials.CheckRolesAnywhere(rc, now)
	if rep.Serial != "" {
		fmt.Fprintf(stdout, "cert:      %s\n", rc.CertificateFile)
		fmt.Fprintf(stdout, "           subject  %s\n", rep.Subject)
		fmt.Fprintf(stdout, "           serial   %s\n", rep.Serial)
		fmt.Fprintf(stdout, "           issuer   %s\n", rep.Issuer)
		if len(rep.Chain) == 0 {
			fmt.Fprintf(stdout, "           chain    none in the file: the issuer must be the trust anchor's CA itself\n")
		}
		for i, s := range rep.Chain {
			fmt.Fprintf(stdout, "           chain[%d] %s\n", i, s)
		}
		fmt.Fprintf(stdout, "           key      %s (%s) in %s\n", rep.KeyType, rep.Algorithm, rc.PrivateKeyFile)
		fmt.Fprintf(stdout, "           valid    %s to %s (%s)\n", rep.NotBefore.UTC().Format(time.RFC3339),
			rep.NotAfter.UTC().Format(time.RFC3339), expiresIn(rep.NotAfter.Sub(now)))
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(stdout, "warning:   roles_anywhere: %s\n", w)
	}
	label := "served:   "
	for _, r := range servedRoles(c) {
		if r[1] == ra.RoleARN.String() {
			fmt.Fprintf(stdout, "%s %s %s: directly from CreateSession (up to 12h)\n", label, r[0], r[1])
		} else {
			fmt.Fprintf(stdout, "%s %s %s: chained from the Roles Anywhere session; AWS caps role chaining at 1h\n", label, r[0], r[1])
		}
		label = "          "
	}
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim check: roles_anywhere: %v\n", err)
		return daemon.ExitCredentials
	}
	return 0
}

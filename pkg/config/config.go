package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is where the packaged daemon reads its configuration.
const DefaultPath = "/etc/imds-shim/imds-shim.yaml"

// Defaults for keys the file may leave out.
const (
	DefaultIMDSListen    = "127.0.0.1:8254"
	DefaultMetricsListen = "127.0.0.1:9254"
	DefaultDuration      = time.Hour
	DefaultHopLimit      = 1
	DefaultTokens        = "required"
	DefaultLink          = "auto"
	DefaultBackend       = "auto"
	DefaultReconcile     = 10 * time.Second
	DefaultStartTimeout  = 45 * time.Second
	DefaultStopTimeout   = 10 * time.Second
	MaxStartTimeout      = 80 * time.Second
	MaxStopTimeout       = 25 * time.Second
)

// Config is the whole file. Field tags are the public key names.
type Config struct {
	RoleARN     string   `yaml:"role_arn"`
	Region      string   `yaml:"region"`
	STSEndpoint string   `yaml:"sts_endpoint"`
	Duration    Duration `yaml:"duration"`

	// AssumeRole parameters.
	SessionName       string            `yaml:"session_name"`
	ExternalID        string            `yaml:"external_id"`
	Policy            string            `yaml:"policy"`
	PolicyARNs        []string          `yaml:"policy_arns"`
	Tags              map[string]string `yaml:"tags"`
	TransitiveTagKeys []string          `yaml:"transitive_tag_keys"`
	SourceIdentity    string            `yaml:"source_identity"`

	// Source credentials: how imds-shim itself authenticates to STS.
	Profile              string `yaml:"profile"`
	CredentialsFile      string `yaml:"credentials_file"`
	ConfigFile           string `yaml:"config_file"`
	WebIdentityTokenFile string `yaml:"web_identity_token_file"`

	StartTimeout Duration `yaml:"start_timeout"`
	StopTimeout  Duration `yaml:"stop_timeout"`

	// SourceFingerprint is not read from the file: the loader sets it to a
	// digest of the source credential files' contents, so that a reload
	// after a key rotation builds a new STS client even though no key in
	// this file changed.
	SourceFingerprint string `yaml:"-"`

	IMDS     IMDS     `yaml:"imds"`
	Metadata Metadata `yaml:"metadata"`
	Network  Network  `yaml:"network"`
	Metrics  Metrics  `yaml:"metrics"`
	Log      Log      `yaml:"log"`
}

// IMDS configures the HTTP API.
type IMDS struct {
	Listen       string   `yaml:"listen"`
	Tokens       string   `yaml:"tokens"`
	HopLimit     int      `yaml:"hop_limit"`
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
	MetadataDir  string   `yaml:"metadata_dir"`
}

// Metadata overrides the instance metadata served to clients. Empty values
// fall back to on-prem defaults derived from the host.
type Metadata struct {
	InstanceID         string            `yaml:"instance_id"`
	AMIID              string            `yaml:"ami_id"`
	InstanceType       string            `yaml:"instance_type"`
	Hostname           string            `yaml:"hostname"`
	LocalHostname      string            `yaml:"local_hostname"`
	LocalIPv4          string            `yaml:"local_ipv4"`
	MAC                string            `yaml:"mac"`
	AvailabilityZone   string            `yaml:"availability_zone"`
	AvailabilityZoneID string            `yaml:"availability_zone_id"`
	Domain             string            `yaml:"domain"`
	Architecture       string            `yaml:"architecture"`
	InstanceProfileARN string            `yaml:"instance_profile_arn"`
	UserData           string            `yaml:"user_data"`
	UserDataFile       string            `yaml:"user_data_file"`
	Tags               map[string]string `yaml:"tags"`
}

// Network configures the 169.254.169.254 address and redirect rules.
type Network struct {
	// Manage false: no address, no rules; clients use imds.listen directly.
	Manage            *bool    `yaml:"manage"`
	Link              string   `yaml:"link"`
	Backend           string   `yaml:"backend"`
	ReconcileInterval Duration `yaml:"reconcile_interval"`
}

// Metrics configures the Prometheus endpoint; an empty listen disables it.
type Metrics struct {
	Listen *string `yaml:"listen"`
}

// Log configures structured logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration accepts Go durations ("1h", "90m", "3600s") or whole seconds.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 1h or 3600", n.Line)
	}
	if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 1h, 15m, 3600)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML prints durations the way they are written.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ManageNetwork reports whether imds-shim owns the address and rules.
func (c *Config) ManageNetwork() bool { return c.Network.Manage == nil || *c.Network.Manage }

// MetricsListen is the metrics address, "" when disabled.
func (c *Config) MetricsListen() string {
	if c.Metrics.Listen == nil {
		return DefaultMetricsListen
	}
	return *c.Metrics.Listen
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes b strictly, fills defaults and validates the result.
func Parse(b []byte) (*Config, error) {
	c, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadUnvalidated reads and decodes the file at path and fills defaults,
// leaving validation to the caller, who may add other packages' checks so
// that every problem is reported at once.
func LoadUnvalidated(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Decode decodes b strictly and fills defaults, without validating.
func Decode(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decoding: %w", cleanYAMLError(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decoding: more than one YAML document")
	}
	c.SetDefaults()
	return &c, nil
}

// cleanYAMLError turns yaml's "field x not found in type config.Config"
// into wording that names the key as the operator wrote it.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]error, 0, len(te.Errors))
	for _, m := range te.Errors {
		if i := strings.Index(m, ": field "); i >= 0 && strings.Contains(m, " not found in type ") {
			key := m[i+len(": field "):]
			key = key[:strings.Index(key, " not found")]
			m = m[:i] + ": unknown key " + strconv.Quote(key)
		}
		msgs = append(msgs, errors.New(m))
	}
	return errors.Join(msgs...)
}

// SetDefaults fills every key the file left out.
func (c *Config) SetDefaults() {
	if c.Duration == 0 {
		c.Duration = Duration(DefaultDuration)
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = Duration(DefaultStartTimeout)
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = Duration(DefaultStopTimeout)
	}
	if c.IMDS.Listen == "" {
		c.IMDS.Listen = DefaultIMDSListen
	}
	if c.IMDS.Tokens == "" {
		c.IMDS.Tokens = DefaultTokens
	}
	if c.IMDS.HopLimit == 0 {
		c.IMDS.HopLimit = DefaultHopLimit
	}
	if c.Network.Link == "" {
		c.Network.Link = DefaultLink
	}
	if c.Network.Backend == "" {
		c.Network.Backend = DefaultBackend
	}
	if c.Network.ReconcileInterval == 0 {
		c.Network.ReconcileInterval = Duration(DefaultReconcile)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// Validate checks the keys this package owns; the credential, API and network
// packages check their own settings (the daemon joins all of them). Every
// problem is reported, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.RoleARN == "" {
		bad("role_arn", "required (the IAM role to serve, e.g. arn:aws:iam::123456789012:role/app)")
	}
	if _, err := netip.ParseAddrPort(c.IMDS.Listen); err != nil {
		bad("imds.listen", "%q is not IP:PORT (e.g. %s)", c.IMDS.Listen, DefaultIMDSListen)
	} else if ap := netip.MustParseAddrPort(c.IMDS.Listen); ap.Port() == 0 {
		bad("imds.listen", "port 0 is not allowed: the redirect needs a fixed port")
	}
	switch c.IMDS.Tokens {
	case "required", "optional":
	default:
		bad("imds.tokens", "%q must be required or optional", c.IMDS.Tokens)
	}
	if c.IMDS.HopLimit < 1 || c.IMDS.HopLimit > 64 {
		bad("imds.hop_limit", "%d is outside 1..64", c.IMDS.HopLimit)
	}
	for i, s := range c.IMDS.AllowedCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("imds.allowed_cidrs[%d]", i), "%q is not a CIDR prefix", s)
		}
	}
	if c.MetricsListen() != "" {
		if _, err := netip.ParseAddrPort(c.MetricsListen()); err != nil {
			bad("metrics.listen", "%q is not IP:PORT (or \"\" to disable)", c.MetricsListen())
		} else if c.MetricsListen() == c.IMDS.Listen {
			bad("metrics.listen", "must differ from imds.listen")
		}
	}
	switch c.Network.Backend {
	case "auto", "nft", "legacy":
	default:
		bad("network.backend", "%q must be auto, nft or legacy", c.Network.Backend)
	}
	if c.Network.Link != "auto" && c.Network.Link != "dummy" && c.Network.Link != "lo" && !validLinkName(c.Network.Link) {
		bad("network.link", "%q must be auto, dummy, lo or an interface name", c.Network.Link)
	}
	if d := c.Network.ReconcileInterval.D(); d < time.Second || d > time.Hour {
		bad("network.reconcile_interval", "%s is outside 1s..1h", d)
	}
	// The unit gives the daemon TimeoutStartSec=90s and TimeoutStopSec=30s;
	// staying inside them lets serve exit with its own code and tear the
	// network down itself instead of being killed.
	if d := c.StartTimeout.D(); d < time.Second || d > MaxStartTimeout {
		bad("start_timeout", "%s is outside 1s..%s (the unit's TimeoutStartSec is 90s)", d, MaxStartTimeout)
	}
	if d := c.StopTimeout.D(); d < time.Second || d > MaxStopTimeout {
		bad("stop_timeout", "%s is outside 1s..%s (the unit's TimeoutStopSec is 30s)", d, MaxStopTimeout)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	if c.Metadata.UserData != "" && c.Metadata.UserDataFile != "" {
		bad("metadata.user_data_file", "set either metadata.user_data or metadata.user_data_file, not both")
	}
	return errors.Join(errs...)
}

// validLinkName follows the kernel's rules for interface names.
func validLinkName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}

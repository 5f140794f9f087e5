package config

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
)

// DefaultPath is where the packaged daemon reads its configuration.
const DefaultPath = "/etc/imds-shim/imds-shim.yaml"

// Defaults: the one place each is declared.
const (
	DefaultDuration          = time.Hour
	DefaultHopLimit          = 1
	DefaultTokens            = "required"
	DefaultLink              = "auto"
	DefaultBackend           = "auto"
	DefaultIPv6              = "auto"
	DefaultUnidentified      = "none"
	DefaultReconcile         = 10 * time.Second
	DefaultStartTimeout      = 45 * time.Second
	DefaultStopTimeout       = 10 * time.Second
	DefaultMaxCallerSessions = 64
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "text"
	MaxStartTimeout          = 80 * time.Second
	MaxStopTimeout           = 25 * time.Second
)

// Default listeners. The metadata API listens on a privileged port, which no
// unprivileged local user can bind: on the endpoint address itself when
// imds-shim manages the network, on loopback otherwise.
var (
	DefaultIMDSListenManaged   = netip.MustParseAddrPort("169.254.169.254:254")
	DefaultIMDSListenUnmanaged = netip.MustParseAddrPort("127.0.0.1:254")
	DefaultMetricsListen       = netip.MustParseAddrPort("127.0.0.1:9254")
)

// Bounds on everything a file can grow. Each is documented in
// packaging/imds-shim.example.yaml and README.md.
const (
	MaxFileBytes      = 1 << 20 // the configuration file itself
	MaxRoles          = 100     // roles
	MaxMatchers       = 64      // each of roles[].units, users, groups, sources
	MaxCallerSessions = 1024    // roles[].max_caller_sessions
	MaxAllowedCIDRs   = 64      // imds.allowed_cidrs
	MaxContainers     = 32      // network.containers
	MaxMetadataTags   = 50      // metadata.tags (EC2's limit per resource)
	MaxPublicKeys     = 50      // metadata.public_keys
	MaxSecurityGroups = 16      // metadata.security_groups (EC2's per-interface maximum)
	MaxSessionTags    = 50      // tags, transitive_tag_keys (STS)
	MaxPolicyARNs     = 10      // policy_arns (STS)
	MaxPolicyChars    = 2048    // policy (STS)
	MaxUserData       = 16 << 10
	MinDuration       = 15 * time.Minute // duration (STS DurationSeconds 900..43200)
	MaxDuration       = 12 * time.Hour
	// MaxChainedDuration is AWS's cap on a session obtained by role
	// chaining: with roles_anywhere, every served role other than
	// roles_anywhere.role_arn is assumed with the Roles Anywhere session.
	MaxChainedDuration   = time.Hour
	MaxPublicKeyBytes    = 16 << 10
	maxLinkNameWithLabel = 15 - len(":imds") // netredirect labels its address LINK:imds in IFNAMSIZ
)

// Config is the whole file, decoded and validated: every value is typed
// (listeners, prefixes, ARNs, durations) and every default is filled in.
// Field tags are the public key names.
type Config struct {
	// RoleARN is the role served to callers that match no roles entry; zero
	// when the file names none (allowed when Roles is given).
	RoleARN awsarn.Role `yaml:"role_arn"`
	// Unidentified is "none" (a caller that cannot be identified gets no
	// role) or "default" (it gets RoleARN).
	Unidentified string `yaml:"unidentified"`
	// Region for STS and placement/region; "" lets the SDK decide.
	Region      string `yaml:"region"`
	STSEndpoint string `yaml:"sts_endpoint"`

	// AssumeRole options of the top-level role; each roles entry inherits
	// those it does not set.
	AssumeRole `yaml:",inline"`

	// Source credentials: how imds-shim itself authenticates to STS.
	Profile              string `yaml:"profile"`
	CredentialsFile      string `yaml:"credentials_file"`
	ConfigFile           string `yaml:"config_file"`
	WebIdentityTokenFile string `yaml:"web_identity_token_file"`
	// RolesAnywhere is the X.509 source; nil when not configured.
	RolesAnywhere *RolesAnywhere `yaml:"roles_anywhere"`

	// Roles are the per-caller roles, first match wins.
	Roles []Role `yaml:"roles"`

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

// AssumeRole holds the STS AssumeRole options, at the top level and per
// roles entry.
type AssumeRole struct {
	Duration          Duration          `yaml:"duration"`
	SessionName       string            `yaml:"session_name"`
	ExternalID        string            `yaml:"external_id"`
	Policy            string            `yaml:"policy"`
	PolicyARNs        []string          `yaml:"policy_arns"`
	Tags              map[string]string `yaml:"tags"`
	TransitiveTagKeys []string          `yaml:"transitive_tag_keys"`
	SourceIdentity    string            `yaml:"source_identity"`
}

// Role is one roles entry: who gets RoleARN, and how it is assumed.
type Role struct {
	RoleARN awsarn.Role `yaml:"role_arn"`
	// Units are systemd unit or slice names (backup.service, app.slice),
	// matched on the caller's cgroup path.
	Units []string `yaml:"units"`
	// Users and Groups are names or numeric ids, as written; resolving
	// names is the matcher's job (a user may be created after start).
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
	// Sources match container callers by source address.
	Sources []netip.Prefix `yaml:"sources"`
	// AssumeRole options; those the entry leaves out are the top level's.
	AssumeRole `yaml:",inline"`
	// CallerSourceIdentity sets sts:SourceIdentity to the caller's user or
	// unit name, one session per caller.
	CallerSourceIdentity bool `yaml:"caller_source_identity"`
	// MaxCallerSessions bounds those per-caller sessions (1..1024).
	MaxCallerSessions int `yaml:"max_caller_sessions"`
}

// RolesAnywhere configures IAM Roles Anywhere as the source of credentials.
type RolesAnywhere struct {
	Certificate    string               `yaml:"certificate"`
	PrivateKey     string               `yaml:"private_key"`
	TrustAnchorARN awsarn.RolesAnywhere `yaml:"trust_anchor_arn"`
	ProfileARN     awsarn.RolesAnywhere `yaml:"profile_arn"`
	RoleARN        awsarn.Role          `yaml:"role_arn"`
	// Endpoint overrides https://rolesanywhere.REGION.DNS-SUFFIX.
	Endpoint string `yaml:"endpoint"`
	// Duration is the session length asked of CreateSession (15m..12h);
	// zero means the top-level duration.
	Duration Duration `yaml:"duration"`
}

// Region is where CreateSession is sent: the trust anchor's region.
func (r *RolesAnywhere) Region() string { return r.TrustAnchorARN.Region }

// IMDS configures the HTTP API.
type IMDS struct {
	// Listen defaults to DefaultIMDSListenManaged or DefaultIMDSListenUnmanaged.
	Listen       netip.AddrPort `yaml:"listen"`
	Tokens       string         `yaml:"tokens"`
	HopLimit     int            `yaml:"hop_limit"`
	AllowedCIDRs []netip.Prefix `yaml:"allowed_cidrs"`
	MetadataDir  string         `yaml:"metadata_dir"`
	// AllowRemote must be true for a listener (imds.listen or
	// metrics.listen) that other hosts could reach.
	AllowRemote bool `yaml:"allow_remote"`
	// AllowUnprivilegedPort lets serve use an imds.listen port >= 1024,
	// which any local user could bind first.
	AllowUnprivilegedPort bool `yaml:"allow_unprivileged_port"`
}

// Metadata overrides the instance metadata served to clients. Empty values
// fall back to on-prem defaults derived from the host.
type Metadata struct {
	InstanceID         string            `yaml:"instance_id"`
	AMIID              string            `yaml:"ami_id"`
	InstanceType       string            `yaml:"instance_type"`
	Hostname           string            `yaml:"hostname"`
	LocalHostname      string            `yaml:"local_hostname"`
	LocalIPv4          netip.Addr        `yaml:"local_ipv4"`
	MAC                string            `yaml:"mac"`
	AvailabilityZone   string            `yaml:"availability_zone"`
	AvailabilityZoneID string            `yaml:"availability_zone_id"`
	Domain             string            `yaml:"domain"`
	Architecture       string            `yaml:"architecture"`
	InstanceProfileARN string            `yaml:"instance_profile_arn"`
	UserData           string            `yaml:"user_data"`
	UserDataFile       string            `yaml:"user_data_file"`
	Tags               map[string]string `yaml:"tags"`
	// PublicKeys are served under public-keys/ (name → OpenSSH key line).
	PublicKeys map[string]string `yaml:"public_keys"`
	// ReservationID is r- + 17 hex; "" means derived like instance_id.
	ReservationID string `yaml:"reservation_id"`
	// SecurityGroups are served at security-groups; empty: the server decides.
	SecurityGroups []string `yaml:"security_groups"`
	// RootDeviceName is block-device-mapping/ami and /root; empty means the
	// handler's default, imds.DefaultRootDeviceName (/dev/xvda).
	RootDeviceName string `yaml:"root_device_name"`
}

// Network configures the 169.254.169.254 address and redirect rules.
type Network struct {
	// Manage false: no address, no rules; clients use imds.listen directly.
	Manage            bool     `yaml:"manage"`
	Link              string   `yaml:"link"`
	Backend           string   `yaml:"backend"`
	ReconcileInterval Duration `yaml:"reconcile_interval"`
	// Containers are bridges whose containers are redirected too.
	Containers []string `yaml:"containers"`
	// IPv6 is auto, true or false: also answer at [fd00:ec2::254].
	IPv6 string `yaml:"ipv6"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is the metrics address; the zero AddrPort (listen: "") disables it.
	Listen netip.AddrPort `yaml:"listen"`
}

// Log configures structured logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Duration is a time.Duration written as a Go duration ("1h", "90m") or
// whole seconds.
type Duration time.Duration

// MarshalYAML prints durations the way they are written.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ManageNetwork reports whether imds-shim owns the address and rules.
func (c *Config) ManageNetwork() bool { return c.Network.Manage }

// MetricsListen is the metrics address, "" when disabled.
func (c *Config) MetricsListen() string {
	if !c.Metrics.Listen.IsValid() {
		return ""
	}
	return c.Metrics.Listen.String()
}

// Load reads the file at path once, decodes and validates it. The error
// names the file and lists every problem, each by its key path.
func Load(path string) (*Config, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileBytes)
	}
	return b, nil
}

// Parse decodes b strictly, fills defaults and validates the result. Every
// problem — unknown keys, values of the wrong type, invalid values — is
// reported at once in an *Error, each key once.
func Parse(b []byte) (*Config, error) {
	var p problems
	c, present := decode(b, &p)
	if c != nil {
		c.validate(present, &p)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

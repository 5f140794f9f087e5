package imds

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
	"github.com/imds-shim/imds-shim/pkg/imds/entryname"
)

// TokenMode says whether IMDSv1 (tokenless) requests are answered.
type TokenMode string

// Token modes, named like EC2's HttpTokens option.
const (
	// TokenRequired answers tokenless requests with 401 (IMDSv2 only).
	TokenRequired TokenMode = "required"
	// TokenOptional also answers tokenless requests (IMDSv1).
	TokenOptional TokenMode = "optional"
)

// Defaults applied to zero-valued Config fields.
const (
	DefaultHopLimit      = 1
	DefaultImageID       = "ami-00000000000000000"
	DefaultInstanceType  = "on-prem"
	DefaultMachineIDPath = "/etc/machine-id"
	// DefaultRootDeviceName is block-device-mapping/ami and /root when
	// RootDeviceName is empty: the name EC2 gives the root volume of
	// Amazon Linux and most HVM AMIs.
	DefaultRootDeviceName = "/dev/xvda"
)

// Config is what the handler serves, built from the validated file by the
// command's composition root. Zero values fall back to on-prem defaults
// derived from the host (see HostFacts) and from RoleARN.
type Config struct {
	// RoleARN is the one role served (arn:PARTITION:iam::ACCOUNT:role/PATH/NAME).
	// Its last path element is the name listed under security-credentials/.
	// With Roles it is the role of callers that match no entry, and may
	// be empty.
	RoleARN string
	// Roles are the ARNs of the per-caller roles (the configuration's
	// `roles`). When set, the credential source must implement Roles, and
	// each caller sees only the role it names; the first one stands in
	// for RoleARN where the host needs one (partition, defaults).
	Roles []string
	// TokenMode is "required" (the default when empty) or "optional".
	TokenMode TokenMode
	// HopLimit is the IP TTL for Listen, 1..64; 0 means DefaultHopLimit.
	// The handler does not use it; it is validated here with the rest.
	HopLimit int
	// AllowedCIDRs are client source ranges allowed besides loopback and the
	// endpoint addresses themselves (169.254.169.254, fd00:ec2::254).
	AllowedCIDRs []netip.Prefix
	// AllowedHosts are extra Host header names accepted (with any port),
	// for clients pointed at the endpoint by a host name.
	AllowedHosts []string

	// Region defaults to the partition's first region (us-east-1 for aws).
	Region string
	// AvailabilityZone is <region><letter>; it defaults to Region+"a".
	AvailabilityZone string
	// AvailabilityZoneID defaults to an ID shaped like EC2's (use1-az1).
	AvailabilityZoneID string
	// Domain is services/domain; it defaults to the partition's DNS suffix.
	Domain string

	InstanceID    string // default: i- + 17 hex derived from the machine ID
	ImageID       string // default DefaultImageID
	InstanceType  string // default DefaultInstanceType
	Hostname      string // default: the host name
	LocalHostname string // default: Hostname
	// LocalIPv4 defaults to the default-route interface's address; absent → 404.
	LocalIPv4 netip.Addr
	// MAC defaults to the default-route interface's address; absent → 404.
	MAC string
	// Architecture is x86_64, arm64 or i386; it defaults to the build's.
	Architecture string
	// PendingTime is the identity document's pendingTime; default: boot time.
	PendingTime time.Time
	// InstanceProfileARN and InstanceProfileID feed iam/info; both default
	// to values derived from RoleARN.
	InstanceProfileARN string
	InstanceProfileID  string

	// PublicKeys (metadata.public_keys) maps key names to OpenSSH public
	// keys, served in EC2's layout sorted by name: public-keys/ lists
	// "0=name", public-keys/0/ lists openssh-key, public-keys/0/openssh-key
	// is the key. Empty: public-keys/ is 404, as on an instance launched
	// without a key pair.
	PublicKeys map[string]string
	// ReservationID (metadata.reservation_id) defaults to r- + 17 hex
	// derived from the machine ID, like InstanceID.
	ReservationID string
	// SecurityGroups (metadata.security_groups) are the names listed at
	// security-groups, one per line; empty means 404 (an on-prem host is in
	// no security group).
	SecurityGroups []string
	// RootDeviceName (metadata.root_device_name) is served at
	// block-device-mapping/ami and block-device-mapping/root; it defaults
	// to DefaultRootDeviceName.
	RootDeviceName string

	// Tags are served under meta-data/tags/instance/ when non-empty.
	Tags map[string]string
	// UserData is served at user-data; nil means 404 like EC2.
	UserData []byte
	// MetadataDir, if set, is a folder whose files add to or override the
	// tree: <dir>/meta-data/instance-id, <dir>/user-data, nested keys, ...
	// It is read when the server is built or updated, never per request.
	MetadataDir string
	// Overrides set individual entries by path below the version
	// ("meta-data/instance-type" → "m5.large"); they win over MetadataDir.
	Overrides map[string]string
	// MachineIDPath is read for the default instance ID when the caller
	// supplies no HostFacts; empty means DefaultMachineIDPath.
	MachineIDPath string
}

var (
	hostRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`) // and at most 253 bytes
	profIDRE = regexp.MustCompile(`^AIPA[A-Z0-9]{16,17}$`)
)

// partitionInfo is what a partition name implies for the defaults.
type partitionInfo struct{ domain, region string }

// partitions maps each partition the SDK's endpoint data knows (the one
// table, in pkg/config/awsarn) to its DNS suffix and default region.
var partitions = func() map[string]partitionInfo {
	m := map[string]partitionInfo{}
	for _, p := range awsarn.Partitions() {
		m[p.ID] = partitionInfo{p.DNSSuffix, p.DefaultRegion}
	}
	return m
}()

// roleARN is a parsed IAM role ARN.
type roleARN struct {
	partition, account, path, name string
}

// primaryRole is the role the host's own metadata derives from: RoleARN,
// else the first of Roles.
func (c Config) primaryRole() string {
	if c.RoleARN == "" && len(c.Roles) > 0 {
		return c.Roles[0]
	}
	return c.RoleARN
}

// parseRoleARN parses s with the one role ARN parser (awsarn.ParseRole).
func parseRoleARN(s string) (roleARN, error) {
	r, err := awsarn.ParseRole(s)
	if err != nil {
		return roleARN{}, err
	}
	return roleARN{partition: r.Partition, account: r.AccountID, path: r.Path, name: r.Name}, nil
}

// Validate checks the invariants the handler relies on: the served role's
// ARN, the token mode and hop limit, and that every name put into the tree
// (tags, overrides) can be listed and looked up. The configuration file's
// keys are validated, by key path, in pkg/config before a Config is built.
// MetadataDir contents are checked when the server is built or updated.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.RoleARN != "" || len(c.Roles) == 0 {
		if _, err := parseRoleARN(c.RoleARN); err != nil {
			add("RoleARN: %w", err)
		}
	}
	for i, a := range c.Roles {
		if _, err := parseRoleARN(a); err != nil {
			add("Roles[%d]: %w", i, err)
		}
	}
	switch c.TokenMode {
	case "", TokenRequired, TokenOptional:
	default:
		add("TokenMode: %q is neither %q nor %q", c.TokenMode, TokenRequired, TokenOptional)
	}
	if c.HopLimit < 0 || c.HopLimit > 64 {
		add("HopLimit: %d is outside 1..64", c.HopLimit)
	}
	for _, p := range c.AllowedCIDRs {
		if !p.IsValid() {
			add("AllowedCIDRs: %v is invalid", p)
		}
	}
	for _, h := range c.AllowedHosts {
		if len(h) > 253 || !hostRE.MatchString(h) {
			add("AllowedHosts: %q is not a host name", h)
		}
	}
	if c.InstanceProfileID != "" && !profIDRE.MatchString(c.InstanceProfileID) {
		add("InstanceProfileID: %q is not AIPA followed by 16-17 upper-case letters or digits", c.InstanceProfileID)
	}
	if c.LocalIPv4.IsValid() && !c.LocalIPv4.Is4() {
		add("LocalIPv4: %v is not an IPv4 address", c.LocalIPv4)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Tags)) { // errors in a stable order
		if err := entryname.Check(k); err != nil {
			add("Tags: key %q: %w", k, err)
		}
		if v := c.Tags[k]; !utf8.ValidString(v) || entryname.HasControl(v) {
			add("Tags: value of %q has control characters or invalid UTF-8", k)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.Overrides)) {
		if _, err := checkEntryPath(p); err != nil {
			add("Overrides: %q: %w", p, err)
		}
	}
	return errors.Join(errs...)
}

// maxDepth bounds how deep an entry may sit below the version root.
const maxDepth = 8

// checkEntryPath validates a path below the version root such as
// "meta-data/placement/region" and returns its elements. The top level must
// be meta-data, dynamic or user-data, and meta-data/iam is reserved for the
// credentials the daemon manages.
func checkEntryPath(p string) ([]string, error) {
	elems := strings.Split(p, "/")
	if len(elems) > maxDepth {
		return nil, fmt.Errorf("deeper than %d elements", maxDepth)
	}
	for _, e := range elems {
		if err := entryname.Check(e); err != nil {
			return nil, err
		}
	}
	switch elems[0] {
	case "meta-data", "dynamic":
		if len(elems) == 1 {
			return nil, fmt.Errorf("%s is a directory", elems[0])
		}
	case "user-data":
		if len(elems) != 1 {
			return nil, errors.New("user-data is a value, not a directory")
		}
	default:
		return nil, fmt.Errorf("top level %q is not meta-data, dynamic or user-data", elems[0])
	}
	if elems[0] == "meta-data" && elems[1] == "iam" {
		return nil, errors.New("meta-data/iam is reserved for the served role")
	}
	return elems, nil
}

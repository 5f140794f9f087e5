package imds

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
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

// Config is what the handler serves. Validate names problems by the YAML
// keys of pkg/config, which is where operators set these values. Zero values fall back to on-prem
// defaults derived from the host (see HostFacts) and from RoleARN.
type Config struct {
	// RoleARN is the one role served (arn:PARTITION:iam::ACCOUNT:role/PATH/NAME).
	// Its last path element is the name listed under security-credentials/.
	RoleARN string
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
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	roleNameRE = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
	azIDRE     = regexp.MustCompile(`^[a-z0-9]{3,12}-az[0-9]{1,2}$`)
	instanceRE = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reserveRE  = regexp.MustCompile(`^r-([0-9a-f]{8}|[0-9a-f]{17})$`)
	deviceRE   = regexp.MustCompile(`^/dev/[a-z0-9]{1,32}$`)
	sshKeyRE   = regexp.MustCompile(`^(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+=*( [ -~]*)?$`)
	imageRE    = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	profIDRE   = regexp.MustCompile(`^AIPA[A-Z0-9]{16,17}$`)
	hostRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)
	domainRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,252})$`)
	typeRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$`)
)

// partitionInfo is what a partition name implies for the defaults.
type partitionInfo struct{ domain, region string }

// partitions lists the partitions an IAM role ARN may name.
var partitions = map[string]partitionInfo{
	"aws":        {"amazonaws.com", "us-east-1"},
	"aws-cn":     {"amazonaws.com.cn", "cn-north-1"},
	"aws-us-gov": {"amazonaws.com", "us-gov-west-1"},
	"aws-iso":    {"c2s.ic.gov", "us-iso-east-1"},
	"aws-iso-b":  {"sc2s.sgov.gov", "us-isob-east-1"},
	"aws-iso-e":  {"cloud.adc-e.uk", "eu-isoe-west-1"},
	"aws-iso-f":  {"csp.hci.ic.gov", "us-isof-south-1"},
	"aws-eusc":   {"amazonaws.eu", "eusc-de-east-1"},
}

// roleARN is a parsed IAM role ARN.
type roleARN struct {
	partition, account, path, name string
}

func parseRoleARN(s string) (roleARN, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || parts[3] != "" {
		return roleARN{}, fmt.Errorf("role ARN %q is not arn:PARTITION:iam::ACCOUNT:role/NAME", s)
	}
	r := roleARN{partition: parts[1], account: parts[4]}
	if _, ok := partitions[r.partition]; !ok {
		return roleARN{}, fmt.Errorf("role ARN %q: unknown partition %q", s, r.partition)
	}
	if !accountRE.MatchString(r.account) {
		return roleARN{}, fmt.Errorf("role ARN %q: account %q is not 12 digits", s, r.account)
	}
	res, ok := strings.CutPrefix(parts[5], "role/")
	if !ok {
		return roleARN{}, fmt.Errorf("role ARN %q: resource is not role/NAME", s)
	}
	i := strings.LastIndexByte(res, '/')
	r.path, r.name = "/"+res[:i+1], res[i+1:]
	if !roleNameRE.MatchString(r.name) {
		return roleARN{}, fmt.Errorf("role ARN %q: invalid role name %q", s, r.name)
	}
	for _, seg := range strings.Split(strings.Trim(r.path, "/"), "/") {
		if r.path != "/" && !roleNameRE.MatchString(seg) {
			return roleARN{}, fmt.Errorf("role ARN %q: invalid path %q", s, r.path)
		}
	}
	return r, nil
}

// Validate reports every problem with c at once. It checks only what is in
// c; MetadataDir contents are checked when the server is built or updated.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.RoleARN == "" {
		add("role_arn: required")
	} else if _, err := parseRoleARN(c.RoleARN); err != nil {
		errs = append(errs, err)
	}
	switch c.TokenMode {
	case "", TokenRequired, TokenOptional:
	default:
		add("imds.tokens: %q is neither %q nor %q", c.TokenMode, TokenRequired, TokenOptional)
	}
	if c.HopLimit != 0 && (c.HopLimit < 1 || c.HopLimit > 64) {
		add("imds.hop_limit: %d is outside 1..64", c.HopLimit)
	}
	for _, p := range c.AllowedCIDRs {
		if !p.IsValid() {
			add("imds.allowed_cidrs: %v is invalid", p)
		}
	}
	for _, h := range c.AllowedHosts {
		if !hostRE.MatchString(h) {
			add("allowed host %q is not a host name", h)
		}
	}
	if c.Region != "" && !regionRE.MatchString(c.Region) {
		add("region: %q is not a region name like us-east-1", c.Region)
	}
	if c.AvailabilityZone != "" {
		region := c.Region
		if region == "" {
			region = c.AvailabilityZone[:len(c.AvailabilityZone)-1]
		}
		if !azMatches(c.AvailabilityZone, region) {
			add("metadata.availability_zone: %q is not %s followed by one letter", c.AvailabilityZone, region)
		}
	}
	if c.AvailabilityZoneID != "" && !azIDRE.MatchString(c.AvailabilityZoneID) {
		add("metadata.availability_zone_id: %q is not shaped like use1-az1", c.AvailabilityZoneID)
	}
	if c.Domain != "" && !domainRE.MatchString(c.Domain) {
		add("metadata.domain: %q is not a DNS suffix", c.Domain)
	}
	if c.InstanceID != "" && !instanceRE.MatchString(c.InstanceID) {
		add("metadata.instance_id: %q is not i- followed by 8 or 17 hex digits", c.InstanceID)
	}
	if c.ImageID != "" && !imageRE.MatchString(c.ImageID) {
		add("metadata.ami_id: %q is not ami- followed by 8 or 17 hex digits", c.ImageID)
	}
	if c.InstanceType != "" && !typeRE.MatchString(c.InstanceType) {
		add("metadata.instance_type: %q has characters other than letters, digits, '.' and '-'", c.InstanceType)
	}
	if c.Hostname != "" && !hostRE.MatchString(c.Hostname) {
		add("metadata.hostname: %q is not a host name", c.Hostname)
	}
	if c.LocalHostname != "" && !hostRE.MatchString(c.LocalHostname) {
		add("metadata.local_hostname: %q is not a host name", c.LocalHostname)
	}
	if c.LocalIPv4.IsValid() && !c.LocalIPv4.Is4() {
		add("metadata.local_ipv4: %v is not an IPv4 address", c.LocalIPv4)
	}
	if c.MAC != "" {
		if hw, err := net.ParseMAC(c.MAC); err != nil || len(hw) != 6 {
			add("metadata.mac: %q is not a 48-bit MAC address", c.MAC)
		}
	}
	switch c.Architecture {
	case "", "x86_64", "arm64", "i386":
	default:
		add("metadata.architecture: %q is not x86_64, arm64 or i386", c.Architecture)
	}
	if c.InstanceProfileARN != "" && !strings.Contains(c.InstanceProfileARN, ":instance-profile/") {
		add("metadata.instance_profile_arn: %q has no :instance-profile/ resource", c.InstanceProfileARN)
	}
	if c.InstanceProfileID != "" && !profIDRE.MatchString(c.InstanceProfileID) {
		add("instance profile ID %q is not AIPA followed by 16-17 upper-case letters or digits", c.InstanceProfileID)
	}
	if c.ReservationID != "" && !reserveRE.MatchString(c.ReservationID) {
		add("metadata.reservation_id: %q is not r- followed by 8 or 17 hex digits", c.ReservationID)
	}
	if c.RootDeviceName != "" && !deviceRE.MatchString(c.RootDeviceName) {
		add("metadata.root_device_name: %q is not a device name like /dev/xvda", c.RootDeviceName)
	}
	for i, g := range c.SecurityGroups {
		// One name per line in the listing: no LF, no control characters.
		if g == "" || len(g) > 255 || !utf8.ValidString(g) || hasControl(g) {
			add("metadata.security_groups[%d]: %q is not a security group name (1-255 printable characters)", i, g)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.PublicKeys)) {
		// The name is listed as "0=name": no LF, '/' or '='.
		if err := checkName(k); err != nil || strings.ContainsRune(k, '=') {
			add("metadata.public_keys: key name %q is not a key pair name (printable, no '/', '=' or leading '.')", k)
		}
		if !sshKeyRE.MatchString(c.PublicKeys[k]) {
			add("metadata.public_keys.%s: not one OpenSSH public key line (\"ssh-ed25519 AAAA... comment\")", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Tags)) { // errors in a stable order
		v := c.Tags[k]
		if err := checkName(k); err != nil {
			add("metadata.tags: key %q: %w", k, err)
		}
		if !utf8.ValidString(v) || hasControl(v) {
			add("metadata.tags.%s: value has control characters or invalid UTF-8", k)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.Overrides)) {
		if _, err := checkEntryPath(p); err != nil {
			add("override %q: %w", p, err)
		}
	}
	return errors.Join(errs...)
}

func azMatches(az, region string) bool {
	return len(az) == len(region)+1 && strings.HasPrefix(az, region) && az[len(az)-1] >= 'a' && az[len(az)-1] <= 'z'
}

// maxNameLen bounds one path element of an entry (EC2 tag keys go to 128).
const maxNameLen = 128

// checkName accepts one element of a metadata path: printable UTF-8 without
// '/', not "." or "..", not starting with '.', at most maxNameLen bytes.
// Such names cannot break a listing (no LF) or a URL path lookup.
func checkName(n string) error {
	switch {
	case n == "":
		return errors.New("empty name")
	case len(n) > maxNameLen:
		return fmt.Errorf("name longer than %d bytes", maxNameLen)
	case n[0] == '.':
		return errors.New("name starts with '.'")
	case strings.ContainsRune(n, '/'):
		return errors.New("name contains '/'")
	case !utf8.ValidString(n) || hasControl(n):
		return errors.New("name has control characters or invalid UTF-8")
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
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
		if err := checkName(e); err != nil {
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

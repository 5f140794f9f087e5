package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
	"github.com/imds-shim/imds-shim/pkg/imds/entryname"
)

// Character rules from the STS, IAM and EC2 API references.
var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	tagRE         = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	policyCharsRE = regexp.MustCompile(`^[\t\n\r\x{20}-\x{FF}]*$`)
	profileBadRE  = regexp.MustCompile(`[\[\]\s]`)
	azIDRE        = regexp.MustCompile(`^[a-z0-9]{3,12}-az[0-9]{1,2}$`)
	instanceRE    = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	imageRE       = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reservationRE = regexp.MustCompile(`^r-([0-9a-f]{8}|[0-9a-f]{17})$`)
	// Lengths are checked apart (maxLen below): Go's regexp compiles a
	// bounded repetition such as {0,252} into that many copies of its
	// class, a program the daemon would keep in memory for nothing.
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)
	domainRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]*$`)
	typeRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)
	deviceRE  = regexp.MustCompile(`^/dev/[a-z][a-z0-9/]*$`)
	keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._:@+,-]*$`)
	sshKeyRE  = regexp.MustCompile(`^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$`)
	// systemd.unit(5): unit names of the kinds a process's cgroup can be.
	unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|scope|slice)$`)
	// useradd(8) portable names; numeric ids are accepted as written.
	userRE = regexp.MustCompile(`^([a-z_][a-z0-9_-]{0,31}\$?|[0-9]{1,10})$`)
)

// endpointAddrs are the addresses clients use; a listener there is reached
// only through the redirect.
var endpointAddrs = []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("fd00:ec2::254")}

// fill sets the defaults that depend on other keys.
func (c *Config) fill(present map[string]bool) {
	if !c.IMDS.Listen.IsValid() { // left out, "", or not decodable (reported)
		if c.Network.Manage {
			c.IMDS.Listen = DefaultIMDSListenManaged
		} else {
			c.IMDS.Listen = DefaultIMDSListenUnmanaged
		}
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		pre := fmt.Sprintf("roles[%d].", i)
		inherit(present[pre+"duration"], &r.Duration, c.Duration)
		inherit(present[pre+"session_name"], &r.SessionName, c.SessionName)
		inherit(present[pre+"external_id"], &r.ExternalID, c.ExternalID)
		inherit(present[pre+"policy"], &r.Policy, c.Policy)
		inherit(present[pre+"policy_arns"], &r.PolicyARNs, slices.Clone(c.PolicyARNs))
		inherit(present[pre+"tags"], &r.Tags, maps.Clone(c.Tags))
		inherit(present[pre+"transitive_tag_keys"], &r.TransitiveTagKeys, slices.Clone(c.TransitiveTagKeys))
		inherit(present[pre+"source_identity"], &r.SourceIdentity, c.SourceIdentity)
		if !present[pre+"max_caller_sessions"] {
			r.MaxCallerSessions = DefaultMaxCallerSessions
		}
	}
	if c.RolesAnywhere != nil && !present["roles_anywhere.duration"] {
		c.RolesAnywhere.Duration = c.Duration
	}
}

// inherit sets *dst to the top level's value unless the entry set its own.
func inherit[T any](set bool, dst *T, top T) {
	if !set {
		*dst = top
	}
}

// validate checks the decoded file; keys that failed to decode are not
// checked again, so each is named once.
func (c *Config) validate(present map[string]bool, p *problems) {
	c.fill(present)
	bad := p.add
	// A key that failed to decode keeps its zero value; skip checks of it.
	failed := map[string]bool{}
	for _, pr := range p.list {
		failed[pr.Key] = true
	}
	check := func(key string) bool { return !failed[key] }

	// Roles.
	if c.RoleARN.IsZero() && len(c.Roles) == 0 && check("role_arn") && check("roles") {
		bad("role_arn", "required (the IAM role to serve, e.g. arn:aws:iam::123456789012:role/app)")
	}
	switch c.Unidentified {
	case "none":
	case "default":
		if c.RoleARN.IsZero() && check("role_arn") {
			bad("unidentified", "default serves the top-level role_arn, which is not set")
		}
	default:
		bad("unidentified", "%q must be none or default", c.Unidentified)
	}
	var region awsarn.Partition
	if c.Region != "" {
		var ok bool
		if region, ok = awsarn.PartitionOfRegion(c.Region); !ok {
			bad("region", "%q is not a region of any AWS partition (such as us-east-1, eusc-de-east-1)", c.Region)
		}
	}
	samePartition := func(key string, r awsarn.Role) {
		if region.ID != "" && !r.IsZero() && r.Partition != region.ID && check(key) {
			bad(key, "is in partition %s, but region %s is in %s", r.Partition, c.Region, region.ID)
		}
	}
	samePartition("role_arn", c.RoleARN)
	if c.STSEndpoint != "" {
		if err := awsarn.CheckEndpoint(c.STSEndpoint); err != nil {
			bad("sts_endpoint", "%v", err)
		}
	}
	webIdentity := c.WebIdentityTokenFile != ""
	c.AssumeRole.validate("", webIdentity, check, bad)
	c.validateSource(bad)
	c.validateRoles(present, bad, check, samePartition, webIdentity)
	c.validateServedWithRolesAnywhere(present, bad, check)

	// The unit gives the daemon TimeoutStartSec=90s and TimeoutStopSec=30s;
	// staying inside them lets serve exit with its own code and tear the
	// network down itself instead of being killed.
	if d := c.StartTimeout.D(); check("start_timeout") && (d < time.Second || d > MaxStartTimeout) {
		bad("start_timeout", "%s is outside 1s..%s (the unit's TimeoutStartSec is 90s)", d, MaxStartTimeout)
	}
	if d := c.StopTimeout.D(); check("stop_timeout") && (d < time.Second || d > MaxStopTimeout) {
		bad("stop_timeout", "%s is outside 1s..%s (the unit's TimeoutStopSec is 30s)", d, MaxStopTimeout)
	}

	c.validateIMDS(bad, check)
	c.validateNetwork(bad, check)
	c.validateMetadata(bad, check)

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
}

type badFunc func(key, format string, args ...any)

// validate checks one set of AssumeRole options; pre is "" or "roles[i].".
// own says which keys to check: a roles entry checks only the options it
// sets itself (those it inherits are checked, and named, at the top level).
func (a *AssumeRole) validate(pre string, webIdentity bool, own func(string) bool, bad badFunc) {
	k := func(key string) string { return pre + key }
	if a.SessionName != "" && own(k("session_name")) {
		if n := len(a.SessionName); n < 2 || n > 64 || !sessionNameRE.MatchString(a.SessionName) {
			bad(k("session_name"), "%q must be 2 to 64 of letters, digits and +=,.@_-", a.SessionName)
		}
	}
	if d := a.Duration.D(); own(k("duration")) {
		switch {
		case d < MinDuration || d > MaxDuration:
			bad(k("duration"), "%s is outside 15m..12h (STS DurationSeconds 900..43200)", d)
		case d%time.Second != 0:
			bad(k("duration"), "%s is not a whole number of seconds", d)
		}
	}
	if a.ExternalID != "" && own(k("external_id")) {
		if n := len(a.ExternalID); n < 2 || n > 1224 || !externalIDRE.MatchString(a.ExternalID) {
			bad(k("external_id"), "must be 2 to 1224 of letters, digits and +=,.@:/_-")
		}
	}
	if a.Policy != "" && own(k("policy")) {
		switch n := utf8.RuneCountInString(a.Policy); {
		case n > MaxPolicyChars:
			bad(k("policy"), "is %d characters, STS allows at most %d", n, MaxPolicyChars)
		case !policyCharsRE.MatchString(a.Policy):
			bad(k("policy"), "contains characters outside tab, newline and U+0020..U+00FF")
		case !json.Valid([]byte(a.Policy)):
			bad(k("policy"), "is not valid JSON")
		}
	}
	if !own(k("policy_arns")) {
	} else if len(a.PolicyARNs) > MaxPolicyARNs {
		bad(k("policy_arns"), "has %d entries, STS allows at most %d", len(a.PolicyARNs), MaxPolicyARNs)
	} else {
		for i, s := range a.PolicyARNs {
			if err := awsarn.CheckPolicy(s); err != nil {
				bad(fmt.Sprintf("%s[%d]", k("policy_arns"), i), "%v", err)
			}
		}
	}
	ownTags := own(k("tags"))
	lower := validateSessionTags(k("tags"), a.Tags, ownTags, bad)
	if !own(k("transitive_tag_keys")) && !ownTags {
	} else if len(a.TransitiveTagKeys) > MaxSessionTags {
		bad(k("transitive_tag_keys"), "has %d entries, STS allows at most %d", len(a.TransitiveTagKeys), MaxSessionTags)
	} else {
		for _, t := range a.TransitiveTagKeys {
			if _, ok := lower[strings.ToLower(t)]; !ok {
				bad(k("transitive_tag_keys"), "%q is not a key of tags", t)
			}
		}
	}
	if a.SourceIdentity != "" && own(k("source_identity")) {
		// STS also forbids an aws: prefix, which the character set excludes.
		if n := len(a.SourceIdentity); n < 2 || n > 64 || !sessionNameRE.MatchString(a.SourceIdentity) {
			bad(k("source_identity"), "%q must be 2 to 64 of letters, digits and +=,.@_- (so it cannot start with aws:)", a.SourceIdentity)
		}
	}
	if webIdentity {
		// AssumeRoleWithWebIdentity has none of these parameters. Only
		// keys the file sets here are named (an entry's inherited ones
		// are reported at the top level).
		for _, f := range []struct {
			key string
			set bool
		}{
			{"external_id", a.ExternalID != ""},
			{"tags", len(a.Tags) > 0},
			{"transitive_tag_keys", len(a.TransitiveTagKeys) > 0},
			{"source_identity", a.SourceIdentity != ""},
		} {
			if f.set && own(k(f.key)) {
				bad(k(f.key), "cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)")
			}
		}
	}
}

// validateSessionTags checks STS session tags and returns the lower-cased
// keys (STS treats tag keys case-insensitively).
func validateSessionTags(key string, tags map[string]string, report bool, bad badFunc) map[string]string {
	lower := map[string]string{}
	if !report {
		bad = func(string, string, ...any) {}
	}
	if len(tags) > MaxSessionTags {
		bad(key, "has %d entries, STS allows at most %d", len(tags), MaxSessionTags)
		return lower
	}
	for _, t := range slices.Sorted(maps.Keys(tags)) {
		v := tags[t]
		if n := utf8.RuneCountInString(t); n < 1 || n > 128 || !tagRE.MatchString(t) {
			bad(key, "key %q must be 1 to 128 of letters, digits, spaces and _.:/=+-@", t)
		} else if strings.HasPrefix(strings.ToLower(t), "aws:") {
			bad(key, "key %q must not start with aws:", t)
		}
		if utf8.RuneCountInString(v) > 256 || !tagRE.MatchString(v) {
			bad(key, "value of %q must be at most 256 of letters, digits, spaces and _.:/=+-@", t)
		}
		if prev, dup := lower[strings.ToLower(t)]; dup {
			bad(key, "keys %q and %q differ only in case", prev, t)
		}
		lower[strings.ToLower(t)] = t
	}
	return lower
}

// validateSource checks how imds-shim authenticates to STS: at most one
// source, absolute paths.
func (c *Config) validateSource(bad badFunc) {
	if c.Profile != "" && profileBadRE.MatchString(c.Profile) {
		bad("profile", "%q must not contain brackets or spaces", c.Profile)
	}
	for _, f := range []struct{ key, path string }{
		{"credentials_file", c.CredentialsFile},
		{"config_file", c.ConfigFile},
		{"web_identity_token_file", c.WebIdentityTokenFile},
	} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			bad(f.key, "%q must be an absolute path", f.path)
		}
	}
	sdkKeys := []struct {
		key string
		set bool
	}{
		{"profile", c.Profile != ""},
		{"credentials_file", c.CredentialsFile != ""},
		{"config_file", c.ConfigFile != ""},
	}
	if c.WebIdentityTokenFile != "" {
		for _, f := range sdkKeys {
			if f.set {
				bad(f.key, "cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity needs no AWS source credentials)")
			}
		}
	}
	ra := c.RolesAnywhere
	if ra == nil {
		return
	}
	var others []string
	for _, f := range sdkKeys {
		if f.set {
			others = append(others, f.key)
		}
	}
	if c.WebIdentityTokenFile != "" {
		others = append(others, "web_identity_token_file")
	}
	if len(others) > 0 {
		bad("roles_anywhere", "is a source of credentials; remove %s (one source only)", strings.Join(others, ", "))
	}
	for _, f := range []struct{ key, path string }{
		{"roles_anywhere.certificate", ra.Certificate},
		{"roles_anywhere.private_key", ra.PrivateKey},
	} {
		switch {
		case f.path == "":
			bad(f.key, "required (an absolute path to a PEM file)")
		case !filepath.IsAbs(f.path):
			bad(f.key, "%q must be an absolute path", f.path)
		}
	}
	for _, f := range []struct {
		key  string
		zero bool
	}{
		{"roles_anywhere.trust_anchor_arn", ra.TrustAnchorARN.ID == ""},
		{"roles_anywhere.profile_arn", ra.ProfileARN.ID == ""},
		{"roles_anywhere.role_arn", ra.RoleARN.IsZero()},
	} {
		if f.zero {
			bad(f.key, "required")
		}
	}
	ta, pr := ra.TrustAnchorARN, ra.ProfileARN
	if ta.ID != "" && pr.ID != "" && (ta.Partition != pr.Partition || ta.Region != pr.Region || ta.AccountID != pr.AccountID) {
		bad("roles_anywhere.profile_arn", "must be in the trust anchor's partition, region and account (%s, %s, %s)", ta.Partition, ta.Region, ta.AccountID)
	}
	if ta.ID != "" && !ra.RoleARN.IsZero() && ra.RoleARN.Partition != ta.Partition {
		bad("roles_anywhere.role_arn", "is in partition %s, the trust anchor in %s", ra.RoleARN.Partition, ta.Partition)
	}
	if ra.Endpoint != "" {
		if err := awsarn.CheckEndpoint(ra.Endpoint); err != nil {
			bad("roles_anywhere.endpoint", "%v", err)
		} else if u, _ := url.Parse(ra.Endpoint); u.Path != "" && u.Path != "/" {
			bad("roles_anywhere.endpoint", "%q must not have a path: CreateSession is always POST /sessions at the endpoint's root", u.Redacted())
		}
	}
	if d := ra.Duration.D(); d < MinDuration || d > MaxDuration || d%time.Second != 0 {
		bad("roles_anywhere.duration", "%s is not a whole number of seconds in 15m..12h (CreateSession durationSeconds 900..43200)", d)
	}
}

// validateServedWithRolesAnywhere checks what each served role (the
// top-level role_arn and every roles entry) cannot do with the roles_anywhere
// source. roles_anywhere.role_arn itself is served from CreateSession
// directly, which takes no session policy, tags, external ID or source
// identity; every other role is assumed through STS with the Roles Anywhere
// session, which is role chaining, capped at MaxChainedDuration by AWS. An
// entry's problem with an option it inherits from the top level is named at
// the entry, with how to override it there.
func (c *Config) validateServedWithRolesAnywhere(present map[string]bool, bad badFunc, check func(string) bool) {
	ra := c.RolesAnywhere
	if ra == nil || ra.RoleARN.IsZero() {
		return
	}
	served := func(pre string, role awsarn.Role, a *AssumeRole, callerSI bool) {
		if role.IsZero() || !check(pre+"role_arn") {
			return
		}
		inherited := func(key string) string {
			if pre == "" || present[pre+key] {
				return ""
			}
			return fmt.Sprintf(" (inherited from the top-level %s; set %s in this entry to override it)", key, key)
		}
		if role != ra.RoleARN {
			if d := a.Duration.D(); d > MaxChainedDuration && check(pre+"duration") {
				bad(pre+"duration", "%s is longer than 1h, AWS's limit for role chaining: %s is assumed with the Roles Anywhere session of roles_anywhere.role_arn (only that role, served from CreateSession directly, can have up to 12h)%s",
					d, role, inherited("duration"))
			}
			return
		}
		for _, f := range []struct {
			key string
			set bool
		}{
			{"policy", a.Policy != ""},
			{"policy_arns", len(a.PolicyARNs) > 0},
			{"tags", len(a.Tags) > 0},
			{"transitive_tag_keys", len(a.TransitiveTagKeys) > 0},
			{"external_id", a.ExternalID != ""},
			{"source_identity", a.SourceIdentity != ""},
		} {
			if f.set && check(pre+f.key) {
				hint := inherited(f.key)
				if hint != "" {
					hint = fmt.Sprintf(" (inherited from the top-level %s; set it empty in this entry)", f.key)
				}
				bad(pre+f.key, "cannot be used for roles_anywhere.role_arn (%s), which is served from CreateSession directly: CreateSession takes no session policy, tags, external ID or source identity%s", role, hint)
			}
		}
		if callerSI {
			bad(pre+"caller_source_identity", "cannot be used for roles_anywhere.role_arn (%s), which is served from CreateSession directly: CreateSession takes no source identity", role)
		}
	}
	served("", c.RoleARN, &c.AssumeRole, false)
	for i := range c.Roles {
		r := &c.Roles[i]
		served(fmt.Sprintf("roles[%d].", i), r.RoleARN, &r.AssumeRole, r.CallerSourceIdentity)
	}
}

func (c *Config) validateRoles(present map[string]bool, bad badFunc, check func(string) bool, samePartition func(string, awsarn.Role), webIdentity bool) {
	if len(c.Roles) > MaxRoles {
		bad("roles", "has %d entries, at most %d are allowed", len(c.Roles), MaxRoles)
		return
	}
	// The role name is what a caller sees under security-credentials/:
	// two different roles must not share it.
	names := map[string]string{}
	nameKey := map[string]string{}
	claim := func(key string, r awsarn.Role) {
		if r.IsZero() {
			return
		}
		if prev, ok := names[r.Name]; ok && prev != r.String() {
			bad(key, "role name %q is already used by %s (%s); callers see only the name, so it must be unique", r.Name, nameKey[r.Name], prev)
			return
		}
		names[r.Name], nameKey[r.Name] = r.String(), key
	}
	claim("role_arn", c.RoleARN)
	for i := range c.Roles {
		r := &c.Roles[i]
		pre := fmt.Sprintf("roles[%d]", i)
		key := func(k string) string { return pre + "." + k }
		if r.RoleARN.IsZero() && check(key("role_arn")) {
			bad(key("role_arn"), "required")
		}
		samePartition(key("role_arn"), r.RoleARN)
		claim(key("role_arn"), r.RoleARN)
		if len(r.Units)+len(r.Users)+len(r.Groups)+len(r.Sources) == 0 && check(key("units")) && check(key("users")) && check(key("groups")) && check(key("sources")) {
			bad(pre, "has no matcher: set units, users, groups or sources")
		}
		for _, m := range []struct {
			key  string
			vals []string
			re   *regexp.Regexp
			what string
		}{
			{"units", r.Units, unitRE, "a systemd unit name ending in .service, .scope or .slice"},
			{"users", r.Users, userRE, "a user name or a numeric uid"},
			{"groups", r.Groups, userRE, "a group name or a numeric gid"},
		} {
			if len(m.vals) > MaxMatchers {
				bad(key(m.key), "has %d entries, at most %d are allowed", len(m.vals), MaxMatchers)
				continue
			}
			for j, v := range m.vals {
				if len(v) > 255 || !m.re.MatchString(v) {
					bad(fmt.Sprintf("%s[%d]", key(m.key), j), "%q is not %s", v, m.what)
				}
			}
		}
		if len(r.Sources) > MaxMatchers {
			bad(key("sources"), "has %d entries, at most %d are allowed", len(r.Sources), MaxMatchers)
		}
		r.AssumeRole.validate(pre+".", webIdentity, func(k string) bool { return present[k] && check(k) }, bad)
		if r.CallerSourceIdentity && present[key("source_identity")] && r.SourceIdentity != "" {
			bad(key("caller_source_identity"), "sets sts:SourceIdentity to the caller's name; remove source_identity from this entry")
		}
		if r.CallerSourceIdentity && webIdentity {
			bad(key("caller_source_identity"), "cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)")
		}
		if n := r.MaxCallerSessions; check(key("max_caller_sessions")) && (n < 1 || n > MaxCallerSessions) {
			bad(key("max_caller_sessions"), "%d is outside 1..%d", n, MaxCallerSessions)
		}
	}
	if c.RolesAnywhere != nil {
		samePartition("roles_anywhere.role_arn", c.RolesAnywhere.RoleARN)
	}
}

// localOnly reports whether a listener on a is reachable only from this
// host: loopback, or an endpoint address (fenced by the redirect's rules).
func localOnly(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || slices.Contains(endpointAddrs, a)
}

func (c *Config) validateIMDS(bad badFunc, check func(string) bool) {
	l := c.IMDS.Listen
	if check("imds.listen") {
		switch {
		case l.Port() == 0:
			bad("imds.listen", "port 0 is not allowed: the redirect needs a fixed port")
		case !localOnly(l.Addr()) && !c.IMDS.AllowRemote:
			bad("imds.listen", "%s can be reached from other hosts; use a loopback address, or set imds.allow_remote: true", l)
		case c.Network.Manage && !l.Addr().Is4():
			bad("imds.listen", "%s: the managed redirect needs an IPv4 listener", l)
		case c.Network.Manage && l == netip.AddrPortFrom(endpointAddrs[0], 80):
			bad("imds.listen", "%s is the redirected address itself; the redirect would loop", l)
		case c.Network.Manage && (l.Addr().IsUnspecified() || l.Addr().IsMulticast()):
			bad("imds.listen", "%s: the redirect needs a unicast address", l)
		}
	}
	switch c.IMDS.Tokens {
	case "required", "optional":
	default:
		bad("imds.tokens", "%q must be required or optional", c.IMDS.Tokens)
	}
	if check("imds.hop_limit") && (c.IMDS.HopLimit < 1 || c.IMDS.HopLimit > 64) {
		bad("imds.hop_limit", "%d is outside 1..64", c.IMDS.HopLimit)
	}
	if len(c.IMDS.AllowedCIDRs) > MaxAllowedCIDRs {
		bad("imds.allowed_cidrs", "has %d entries, at most %d are allowed", len(c.IMDS.AllowedCIDRs), MaxAllowedCIDRs)
	}
	if c.IMDS.MetadataDir != "" && !filepath.IsAbs(c.IMDS.MetadataDir) {
		bad("imds.metadata_dir", "%q must be an absolute path", c.IMDS.MetadataDir)
	}
	if m := c.Metrics.Listen; m.IsValid() && check("metrics.listen") {
		switch {
		case m.Port() == 0:
			bad("metrics.listen", "port 0 is not allowed")
		case m == l:
			bad("metrics.listen", "must differ from imds.listen")
		case !localOnly(m.Addr()) && !c.IMDS.AllowRemote:
			bad("metrics.listen", "%s can be reached from other hosts; use a loopback address, or set imds.allow_remote: true", m)
		}
	}
}

func (c *Config) validateNetwork(bad badFunc, check func(string) bool) {
	n := c.Network
	switch n.Backend {
	case "auto", "nft", "legacy":
	default:
		bad("network.backend", "%q must be auto, nft or legacy", n.Backend)
	}
	if n.Link != "auto" && n.Link != "dummy" && n.Link != "lo" {
		if err := checkLinkName(n.Link, maxLinkNameWithLabel); err != nil {
			bad("network.link", "must be auto, dummy, lo or an interface name: %v", err)
		}
	}
	if d := n.ReconcileInterval.D(); check("network.reconcile_interval") && (d < time.Second || d > time.Hour) {
		bad("network.reconcile_interval", "%s is outside 1s..1h", d)
	}
	if len(n.Containers) > MaxContainers {
		bad("network.containers", "has %d entries, at most %d are allowed", len(n.Containers), MaxContainers)
	} else {
		seen := map[string]bool{}
		for i, b := range n.Containers {
			key := fmt.Sprintf("network.containers[%d]", i)
			if err := checkLinkName(b, 15); err != nil {
				bad(key, "%v", err)
			} else if b == "lo" {
				bad(key, "lo is not a bridge; the host's own callers are always redirected")
			} else if seen[b] {
				bad(key, "%q is listed twice", b)
			}
			seen[b] = true
		}
	}
	// Containers reach the listener through a PREROUTING DNAT, which
	// cannot lead to 127.0.0.0/8 without route_localnet (never changed).
	if len(n.Containers) > 0 && c.IMDS.Listen.Addr().IsLoopback() && check("imds.listen") {
		bad("imds.listen", "%s is a loopback address, which containers (network.containers) cannot reach; use the default 169.254.169.254:254", c.IMDS.Listen)
	}
	switch n.IPv6 {
	case "auto", "true", "false":
	default:
		bad("network.ipv6", "%q must be auto, true or false", n.IPv6)
	}
}

// checkLinkName follows the kernel's rules for interface names (IFNAMSIZ).
func checkLinkName(s string, max int) error {
	switch {
	case s == "" || s == "." || s == "..":
		return fmt.Errorf("%q is not an interface name", s)
	case strings.ContainsAny(s, "/: \t\n\x00"):
		return fmt.Errorf("%q contains a character interface names cannot have", s)
	case len(s) > max:
		return fmt.Errorf("%q is longer than %d bytes", s, max)
	}
	return nil
}

func (c *Config) validateMetadata(bad badFunc, check func(string) bool) {
	m := c.Metadata
	region := c.Region
	if m.AvailabilityZone != "" {
		if region == "" {
			region = m.AvailabilityZone[:len(m.AvailabilityZone)-1]
		}
		az := m.AvailabilityZone
		if !(len(az) == len(region)+1 && strings.HasPrefix(az, region) && az[len(az)-1] >= 'a' && az[len(az)-1] <= 'z') {
			bad("metadata.availability_zone", "%q is not %s followed by one letter", az, region)
		} else if _, ok := awsarn.PartitionOfRegion(region); !ok && c.Region == "" {
			bad("metadata.availability_zone", "%q is not in a region of any AWS partition", az)
		}
	}
	for _, f := range []struct {
		key, val string
		re       *regexp.Regexp
		maxLen   int
		what     string
	}{
		{"metadata.availability_zone_id", m.AvailabilityZoneID, azIDRE, 17, "shaped like use1-az1"},
		{"metadata.domain", m.Domain, domainRE, 253, "a DNS suffix"},
		{"metadata.instance_id", m.InstanceID, instanceRE, 19, "i- followed by 8 or 17 hex digits"},
		{"metadata.ami_id", m.AMIID, imageRE, 21, "ami- followed by 8 or 17 hex digits"},
		{"metadata.instance_type", m.InstanceType, typeRE, 64, "letters, digits, '.' and '-' (at most 64)"},
		{"metadata.hostname", m.Hostname, hostRE, 253, "a host name"},
		{"metadata.local_hostname", m.LocalHostname, hostRE, 253, "a host name"},
		{"metadata.reservation_id", m.ReservationID, reservationRE, 19, "r- followed by 8 or 17 hex digits"},
		{"metadata.root_device_name", m.RootDeviceName, deviceRE, 36, "a device path such as /dev/xvda"},
	} {
		if f.val != "" && (len(f.val) > f.maxLen || !f.re.MatchString(f.val)) {
			bad(f.key, "%q is not %s", f.val, f.what)
		}
	}
	if m.LocalIPv4.IsValid() && !m.LocalIPv4.Is4() {
		bad("metadata.local_ipv4", "%s is not an IPv4 address", m.LocalIPv4)
	}
	if m.MAC != "" {
		if hw, err := net.ParseMAC(m.MAC); err != nil || len(hw) != 6 {
			bad("metadata.mac", "%q is not a 48-bit MAC address", m.MAC)
		}
	}
	switch m.Architecture {
	case "", "x86_64", "arm64", "i386":
	default:
		bad("metadata.architecture", "%q is not x86_64, arm64 or i386", m.Architecture)
	}
	if m.InstanceProfileARN != "" {
		if err := checkInstanceProfile(m.InstanceProfileARN); err != nil {
			bad("metadata.instance_profile_arn", "%v", err)
		}
	}
	if m.UserData != "" && m.UserDataFile != "" {
		bad("metadata.user_data_file", "set either metadata.user_data or metadata.user_data_file, not both")
	}
	if len(m.UserData) > MaxUserData {
		bad("metadata.user_data", "%d bytes is more than EC2's 16 KiB", len(m.UserData))
	}
	if m.UserDataFile != "" && !filepath.IsAbs(m.UserDataFile) {
		bad("metadata.user_data_file", "%q must be an absolute path", m.UserDataFile)
	}
	if len(m.Tags) > MaxMetadataTags {
		bad("metadata.tags", "has %d tags, EC2 allows at most %d per instance", len(m.Tags), MaxMetadataTags)
	} else {
		for _, k := range slices.Sorted(maps.Keys(m.Tags)) {
			if err := entryname.Check(k); err != nil {
				bad("metadata.tags", "key %q: %v", k, err)
			}
			if v := m.Tags[k]; len(v) > 256 || !utf8.ValidString(v) || entryname.HasControl(v) {
				bad("metadata.tags", "value of %q must be at most 256 bytes of UTF-8 without control characters", k)
			}
		}
	}
	if len(m.PublicKeys) > MaxPublicKeys {
		bad("metadata.public_keys", "has %d keys, at most %d are allowed", len(m.PublicKeys), MaxPublicKeys)
	} else {
		for _, k := range slices.Sorted(maps.Keys(m.PublicKeys)) {
			if len(k) > 255 || !keyNameRE.MatchString(k) {
				bad("metadata.public_keys", "name %q must be 1 to 255 of letters, digits, spaces and ._:@+,- (it is listed as 0=name)", k)
			}
			if v := m.PublicKeys[k]; len(v) > MaxPublicKeyBytes || !sshKeyRE.MatchString(v) {
				bad("metadata.public_keys", "%q is not one OpenSSH public key line (ssh-ed25519 AAAA… comment)", k)
			}
		}
	}
	if len(m.SecurityGroups) > MaxSecurityGroups {
		bad("metadata.security_groups", "has %d entries, at most %d are allowed", len(m.SecurityGroups), MaxSecurityGroups)
	} else {
		for i, g := range m.SecurityGroups {
			if err := entryname.Check(g); err != nil || len(g) > 255 {
				bad(fmt.Sprintf("metadata.security_groups[%d]", i), "%q is not a security group name (1 to 255 printable characters without '/')", g)
			}
		}
	}
}

// checkInstanceProfile checks an IAM instance profile ARN: the role ARN's
// shape with another resource type, so the one parser checks it.
func checkInstanceProfile(s string) error {
	if _, err := awsarn.ParseRole(strings.Replace(s, ":instance-profile/", ":role/", 1)); err != nil || !strings.Contains(s, ":instance-profile/") {
		return fmt.Errorf("%q is not an IAM instance profile ARN such as arn:aws:iam::123456789012:instance-profile/NAME", s)
	}
	return nil
}

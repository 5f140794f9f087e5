package credentials

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits from the STS AssumeRole API reference.
const (
	MinDuration     = 15 * time.Minute
	MaxDuration     = 12 * time.Hour
	DefaultDuration = time.Hour

	maxPolicyChars  = 2048
	maxPolicyARNs   = 10
	maxTags         = 50
	maxTagKeyLen    = 128
	maxTagValueLen  = 256
	maxSessionName  = 64
	defaultSessBase = "imds-shim"
)

// Config says which role to assume and how imds-shim authenticates to STS.
// Validate reports problems by the YAML key names of pkg/config.
type Config struct {
	// RoleARN is the IAM role to assume (role_arn), required.
	RoleARN string
	// SessionName is the role session name (session_name); empty means
	// DefaultSessionName(hostname), chosen by the caller.
	SessionName string
	// Duration is the requested session length (duration), 15m..12h;
	// zero means DefaultDuration. The role's MaxSessionDuration must allow it.
	Duration time.Duration
	// ExternalID is passed as sts:ExternalId (external_id).
	ExternalID string
	// Policy is an inline session policy, JSON (policy).
	Policy string
	// PolicyARNs are managed session policies (policy_arns), at most 10.
	PolicyARNs []string
	// Tags are session tags (tags), at most 50.
	Tags map[string]string
	// TransitiveTagKeys are tag keys that persist through role chaining
	// (transitive_tag_keys); each must be a key of Tags.
	TransitiveTagKeys []string
	// SourceIdentity is recorded in CloudTrail and sticks to chained
	// sessions (source_identity).
	SourceIdentity string
	// Region selects the regional STS endpoint (region). Empty: the SDK's
	// own resolution (AWS_REGION, profile), then the partition's default.
	Region string
	// STSEndpoint overrides the endpoint URL (sts_endpoint): a VPC endpoint,
	// or an emulator. http:// is accepted only for loopback and private IP
	// literals, since the response carries the new secret key.
	STSEndpoint string
	// Profile is the shared-config profile for source credentials (profile).
	// When set it wins over AWS_ACCESS_KEY_ID in the environment.
	Profile string
	// CredentialsFile and ConfigFile replace the SDK's default shared files
	// (credentials_file, config_file), e.g. /etc/imds-shim/credentials.
	CredentialsFile string
	ConfigFile      string
	// WebIdentityTokenFile switches to AssumeRoleWithWebIdentity with the
	// JWT in this file (web_identity_token_file), re-read on every call; no
	// AWS source credentials are used then.
	WebIdentityTokenFile string
}

var (
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]*$`)
	tagRE         = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	regionRE      = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)*-[0-9]+$`)
	policyCharsRE = regexp.MustCompile(`^[\t\n\r\x{20}-\x{FF}]*$`)
	profileBadRE  = regexp.MustCompile(`[\[\]\s]`)
)

// Validate checks every field against the STS API's rules and returns all
// problems at once, each prefixed with its YAML key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf(key+": "+format, args...))
	}
	webIdentity := c.WebIdentityTokenFile != ""

	if c.RoleARN == "" {
		bad("role_arn", "required, e.g. arn:aws:iam::123456789012:role/NAME")
	} else if _, err := ParseRoleARN(c.RoleARN); err != nil {
		bad("role_arn", "%v", err)
	}
	if c.SessionName != "" {
		if n := len(c.SessionName); n < 2 || n > maxSessionName || !sessionNameRE.MatchString(c.SessionName) {
			bad("session_name", "%q must be 2 to 64 of letters, digits and +=,.@_-", c.SessionName)
		}
	}
	switch d := c.Duration; {
	case d == 0:
	case d < MinDuration || d > MaxDuration:
		bad("duration", "%s is outside 15m..12h (STS DurationSeconds 900..43200)", d)
	case d%time.Second != 0:
		bad("duration", "%s is not a whole number of seconds", d)
	}
	if c.ExternalID != "" {
		if n := len(c.ExternalID); n < 2 || n > 1224 || !externalIDRE.MatchString(c.ExternalID) {
			bad("external_id", "must be 2 to 1224 of letters, digits and +=,.@:/_-")
		}
	}
	if c.Policy != "" {
		switch {
		case utf8.RuneCountInString(c.Policy) > maxPolicyChars:
			bad("policy", "is %d characters, STS allows at most %d", utf8.RuneCountInString(c.Policy), maxPolicyChars)
		case !policyCharsRE.MatchString(c.Policy):
			bad("policy", "contains characters outside tab, newline and U+0020..U+00FF")
		case !json.Valid([]byte(c.Policy)):
			bad("policy", "is not valid JSON")
		}
	}
	if len(c.PolicyARNs) > maxPolicyARNs {
		bad("policy_arns", "has %d entries, STS allows at most %d", len(c.PolicyARNs), maxPolicyARNs)
	}
	for i, a := range c.PolicyARNs {
		if err := checkPolicyARN(a); err != nil {
			bad("policy_arns", "[%d] %v", i, err)
		}
	}
	c.validateTags(bad)
	if c.SourceIdentity != "" {
		// STS also forbids an aws: prefix, which the character set
		// already excludes.
		if n := len(c.SourceIdentity); n < 2 || n > 64 || !sessionNameRE.MatchString(c.SourceIdentity) {
			bad("source_identity", "%q must be 2 to 64 of letters, digits and +=,.@_- (so it cannot start with aws:)", c.SourceIdentity)
		}
	}
	if c.Region != "" && !regionRE.MatchString(c.Region) {
		bad("region", "%q is not a region name such as us-east-1", c.Region)
	}
	if c.STSEndpoint != "" {
		if err := checkEndpoint(c.STSEndpoint); err != nil {
			bad("sts_endpoint", "%v", err)
		}
	}
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
	if webIdentity {
		// AssumeRoleWithWebIdentity has none of these parameters and
		// needs no AWS source credentials.
		for _, f := range []struct {
			key string
			set bool
		}{
			{"external_id", c.ExternalID != ""},
			{"tags", len(c.Tags) > 0},
			{"transitive_tag_keys", len(c.TransitiveTagKeys) > 0},
			{"source_identity", c.SourceIdentity != ""},
			{"profile", c.Profile != ""},
			{"credentials_file", c.CredentialsFile != ""},
			{"config_file", c.ConfigFile != ""},
		} {
			if f.set {
				bad(f.key, "cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)")
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) validateTags(bad func(key, format string, args ...any)) {
	if len(c.Tags) > maxTags {
		bad("tags", "has %d entries, STS allows at most %d", len(c.Tags), maxTags)
	}
	lower := map[string]string{}
	for _, k := range sortedKeys(c.Tags) {
		v := c.Tags[k]
		if n := utf8.RuneCountInString(k); n < 1 || n > maxTagKeyLen || !tagRE.MatchString(k) {
			bad("tags", "key %q must be 1 to 128 of letters, digits, spaces and _.:/=+-@", k)
		} else if strings.HasPrefix(strings.ToLower(k), "aws:") {
			bad("tags", "key %q must not start with aws:", k)
		}
		if utf8.RuneCountInString(v) > maxTagValueLen || !tagRE.MatchString(v) {
			bad("tags", "value of %q must be at most 256 of letters, digits, spaces and _.:/=+-@", k)
		}
		// STS treats tag keys case-insensitively.
		if prev, dup := lower[strings.ToLower(k)]; dup {
			bad("tags", "keys %q and %q differ only in case", prev, k)
		}
		lower[strings.ToLower(k)] = k
	}
	if len(c.TransitiveTagKeys) > maxTags {
		bad("transitive_tag_keys", "has %d entries, STS allows at most %d", len(c.TransitiveTagKeys), maxTags)
	}
	for _, k := range c.TransitiveTagKeys {
		if _, ok := lower[strings.ToLower(k)]; !ok {
			bad("transitive_tag_keys", "%q is not a key of tags", k)
		}
	}
}

var policyARNRE = regexp.MustCompile(`^arn:aws(-[a-z0-9]+)*:iam::([0-9]{12}|aws):policy/([\x21-\x7E]+)$`)

func checkPolicyARN(s string) error {
	if len(s) < 20 || len(s) > 2048 || !policyARNRE.MatchString(s) {
		return fmt.Errorf("%q is not an IAM policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess", s)
	}
	return nil
}

func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// url's own error quotes the input, which may hold a password.
		return errors.New("not a URL")
	}
	// Never repeat a password into logs, check output or status.
	s = u.Redacted()
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q must be an http(s)://HOST[:PORT] URL", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not carry user info, a query or a fragment", s)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		ip, err := netip.ParseAddr(host)
		if host != "localhost" && (err != nil || !(ip.IsLoopback() || ip.IsPrivate())) {
			return fmt.Errorf("%q: plain http is allowed only for loopback or private IP addresses, because the response carries secret keys", s)
		}
	}
	if p := u.Port(); p != "" {
		if _, err := net.LookupPort("tcp", p); err != nil {
			return fmt.Errorf("%q: bad port: %w", s, err)
		}
	}
	return nil
}

// DefaultSessionName derives an STS role session name from the host name:
// "imds-shim-HOST", with characters STS rejects replaced by '-' and cut to
// 64 characters, so CloudTrail shows which host a session belongs to.
func DefaultSessionName(hostname string) string {
	var b strings.Builder
	b.WriteString(defaultSessBase)
	if hostname != "" {
		b.WriteByte('-')
		for _, r := range hostname {
			if r < utf8.RuneSelf && sessionNameRE.MatchString(string(r)) {
				b.WriteRune(r)
			} else {
				b.WriteByte('-')
			}
		}
	}
	s := b.String()
	if len(s) > maxSessionName {
		s = s[:maxSessionName]
	}
	return s
}

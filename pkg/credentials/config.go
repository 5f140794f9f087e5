package credentials

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits from the STS AssumeRole API reference.
const (
	MinDuration = 15 * time.Minute
	MaxDuration = 12 * time.Hour
	// DefaultDuration is what STS grants when DurationSeconds is omitted;
	// the refresher plans with it when Config.Duration is zero.
	DefaultDuration = time.Hour
	maxSessionName  = 64
	defaultSessBase = "imds-shim"
)

// Config says which role to assume and how imds-shim authenticates to STS.
// It is built from the validated file by the command's composition root;
// the comments name the keys each field comes from.
type Config struct {
	// RoleARN is the IAM role to assume (role_arn), required.
	RoleARN string
	// SessionName is the role session name (session_name); empty means
	// DefaultSessionName(hostname), chosen by the caller.
	SessionName string
	// Duration is the requested session length (duration), 15m..12h;
	// zero means STS's default of 1h. The role's MaxSessionDuration must allow it.
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

var sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]*$`)

// Validate checks the invariants New relies on: a role ARN that parses and
// a duration STS accepts. The configuration file is validated, key by key,
// by pkg/config before a Config is built from it.
func (c *Config) Validate() error {
	var errs []error
	if _, err := ParseRoleARN(c.RoleARN); err != nil {
		errs = append(errs, fmt.Errorf("role ARN: %w", err))
	}
	if d := c.Duration; d != 0 && (d < MinDuration || d > MaxDuration || d%time.Second != 0) {
		errs = append(errs, fmt.Errorf("duration: %s is not a whole number of seconds in %s..%s", d, MinDuration, MaxDuration))
	}
	return errors.Join(errs...)
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

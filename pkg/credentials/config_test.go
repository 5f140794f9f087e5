package credentials

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRoleARN(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    RoleARN
		wantErr string
	}{
		{in: "arn:aws:iam::123456789012:role/test", want: RoleARN{"aws", "123456789012", "/", "test"}},
		{in: "arn:aws-cn:iam::123456789012:role/a/b/Name_1+=,.@-", want: RoleARN{"aws-cn", "123456789012", "/a/b/", "Name_1+=,.@-"}},
		{in: "arn:aws-us-gov:iam::123456789012:role/gov", want: RoleARN{"aws-us-gov", "123456789012", "/", "gov"}},
		{in: "arn:aws-iso-b:iam::123456789012:role/x/y", want: RoleARN{"aws-iso-b", "123456789012", "/x/", "y"}},
		{in: "arn:aws-eusc:iam::123456789012:role/eu", want: RoleARN{"aws-eusc", "123456789012", "/", "eu"}},
		{in: "arn:aws:iam::12345678901:role/test", wantErr: `account "12345678901" is not 12 digits`},
		{in: "arn:aws:iam::123456789012:user/test", wantErr: `resource "user/test" does not start with role/`},
		{in: "arn:aws:sts::123456789012:role/test", wantErr: `service is "sts", want iam`},
		{in: "arn:aws:iam:us-east-1:123456789012:role/test", wantErr: `region is "us-east-1"`},
		{in: "arn:gcp:iam::123456789012:role/test", wantErr: `partition "gcp"`},
		{in: "arn:aws:iam::123456789012:role/", wantErr: `role name "" is not`},
		{in: "arn:aws:iam::123456789012:role/a//b", wantErr: `role path "/a//"`},
		{in: "arn:aws:iam::123456789012:role/" + strings.Repeat("n", 65), wantErr: "role name"},
		{in: "arn:aws:iam::123456789012:role/sp ace", wantErr: "role name"},
		{in: "arn:aws:iam::1:role", wantErr: "20 to 2048 characters"},
		{in: "not-an-arn-at-all-but-long", wantErr: "want arn:PARTITION"},
		{in: "arn:aws:iam::" + strings.Repeat("1", 2048), wantErr: "20 to 2048"},
	} {
		got, err := ParseRoleARN(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRoleARN(%q) err = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRoleARN(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ParseRoleARN(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{RoleARN: "arn:aws:iam::123456789012:role/test"}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want []string // one line per problem, in order
	}{
		{"minimal", func(*Config) {}, nil},
		{"everything valid", func(c *Config) {
			c.SessionName, c.Duration, c.ExternalID = "host-1.example.com", 12*time.Hour, "Ext:ID/1"
			c.Policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`
			c.PolicyARNs = []string{"arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws-cn:iam::123456789012:policy/p/q"}
			c.Tags = map[string]string{"Team": "blue sky", "cost-center": ""}
			c.TransitiveTagKeys = []string{"team"}
			c.SourceIdentity, c.Region = "alice@example.com", "us-gov-west-1"
			c.STSEndpoint = "https://sts.eu-west-1.amazonaws.com"
			c.Profile, c.CredentialsFile, c.ConfigFile = "imds", "/etc/imds-shim/credentials", "/etc/imds-shim/aws-config"
		}, nil},
		{"loopback http endpoint", func(c *Config) { c.STSEndpoint = "http://127.0.0.1:5000" }, nil},
		{"private http endpoint", func(c *Config) { c.STSEndpoint = "http://10.213.1.1:5000" }, nil},
		{"min duration", func(c *Config) { c.Duration = 15 * time.Minute }, nil},
		{"missing role", func(c *Config) { c.RoleARN = "" }, []string{"role_arn: required, e.g. arn:aws:iam::123456789012:role/NAME"}},
		{"every problem at once", func(c *Config) {
			c.RoleARN = "arn:aws:iam::123456789012:user/bob"
			c.SessionName = "x"
			c.Duration = 14 * time.Minute
			c.ExternalID = "has space"
			c.Policy = "{not json"
			c.PolicyARNs = []string{"arn:aws:iam::123456789012:role/notapolicy"}
			c.Tags = map[string]string{"aws:reserved": "v", "Env": "a", "env": "b", "bad!": "x", "ok": strings.Repeat("v", 257)}
			c.TransitiveTagKeys = []string{"missing"}
			c.SourceIdentity = "aws:me"
			c.Region = "US-EAST-1"
			c.STSEndpoint = "http://sts.example.com"
			c.Profile = "two words"
			c.CredentialsFile = "relative/creds"
			c.ConfigFile = "cfg"
		}, []string{
			`role_arn: "arn:aws:iam::123456789012:user/bob" is not an IAM role ARN: resource "user/bob" does not start with role/`,
			`session_name: "x" must be 2 to 64 of letters, digits and +=,.@_-`,
			`duration: 14m0s is outside 15m..12h (STS DurationSeconds 900..43200)`,
			`external_id: must be 2 to 1224 of letters, digits and +=,.@:/_-`,
			`policy: is not valid JSON`,
			`policy_arns: [0] "arn:aws:iam::123456789012:role/notapolicy" is not an IAM policy ARN such as arn:aws:iam::aws:policy/ReadOnlyAccess`,
			`tags: key "aws:reserved" must not start with aws:`,
			`tags: key "bad!" must be 1 to 128 of letters, digits, spaces and _.:/=+-@`,
			`tags: keys "Env" and "env" differ only in case`,
			`tags: value of "ok" must be at most 256 of letters, digits, spaces and _.:/=+-@`,
			`transitive_tag_keys: "missing" is not a key of tags`,
			`source_identity: "aws:me" must be 2 to 64 of letters, digits and +=,.@_- (so it cannot start with aws:)`,
			`region: "US-EAST-1" is not a region name such as us-east-1`,
			`sts_endpoint: "http://sts.example.com": plain http is allowed only for loopback or private IP addresses, because the response carries secret keys`,
			`profile: "two words" must not contain brackets or spaces`,
			`credentials_file: "relative/creds" must be an absolute path`,
			`config_file: "cfg" must be an absolute path`,
		}},
		{"limits", func(c *Config) {
			c.Duration = 12*time.Hour + time.Second
			c.Policy = `{"a":"` + strings.Repeat("x", 2048) + `"}`
			c.PolicyARNs = make([]string, 11)
			for i := range c.PolicyARNs {
				c.PolicyARNs[i] = "arn:aws:iam::aws:policy/P"
			}
			c.Tags = map[string]string{}
			for i := range 51 {
				c.Tags[strings.Repeat("k", i+1)] = "v"
			}
		}, []string{
			"duration: 12h0m1s is outside 15m..12h (STS DurationSeconds 900..43200)",
			"policy: is 2056 characters, STS allows at most 2048",
			"policy_arns: has 11 entries, STS allows at most 10",
			"tags: has 51 entries, STS allows at most 50",
		}},
		{"fractional duration", func(c *Config) { c.Duration = time.Hour + time.Millisecond }, []string{"duration: 1h0m0.001s is not a whole number of seconds"}},
		{"bad endpoint", func(c *Config) { c.STSEndpoint = "sts.amazonaws.com" }, []string{`sts_endpoint: "sts.amazonaws.com" must be an http(s)://HOST[:PORT] URL`}},
		{"web identity conflicts", func(c *Config) {
			c.WebIdentityTokenFile = "/run/token"
			c.ExternalID, c.SourceIdentity, c.Profile = "ext-1", "me", "p"
			c.Tags, c.TransitiveTagKeys = map[string]string{"a": "b"}, []string{"a"}
			c.CredentialsFile, c.ConfigFile = "/c", "/d"
		}, []string{
			"external_id: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"tags: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"transitive_tag_keys: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"source_identity: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"profile: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"credentials_file: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
			"config_file: cannot be used with web_identity_token_file (AssumeRoleWithWebIdentity)",
		}},
		{"relative token file", func(c *Config) { c.WebIdentityTokenFile = "token" }, []string{`web_identity_token_file: "token" must be an absolute path`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			var got []string
			if err := c.Validate(); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultSessionName(t *testing.T) {
	for _, tc := range []struct{ host, want string }{
		{"web-1.example.com", "imds-shim-web-1.example.com"},
		{"", "imds-shim"},
		{"host_with spaces/and:colons", "imds-shim-host_with-spaces-and-colons"},
		{"hôte", "imds-shim-h-te"},
		{strings.Repeat("a", 100), "imds-shim-" + strings.Repeat("a", 54)},
	} {
		got := DefaultSessionName(tc.host)
		if got != tc.want {
			t.Errorf("DefaultSessionName(%q) = %q, want %q", tc.host, got, tc.want)
		}
		c := Config{RoleARN: testRole, SessionName: got}
		if err := c.Validate(); err != nil {
			t.Errorf("DefaultSessionName(%q) = %q is not valid: %v", tc.host, got, err)
		}
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	_, err := New(Config{RoleARN: "arn:aws:iam::123456789012:role/x", Duration: time.Minute}, &fakeSTS{}, Options{})
	if err == nil || !strings.Contains(err.Error(), "duration:") {
		t.Fatalf("New err = %v, want a duration problem", err)
	}
	r, err := New(Config{RoleARN: "arn:aws:iam::123456789012:role/x"}, &fakeSTS{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.State(); !strings.HasPrefix(st.SessionName, "imds-shim") {
		t.Errorf("default session name %q", st.SessionName)
	}
}

package credentials

import (
	"strings"
	"testing"
	"time"
)

// TestValidate covers the invariants New relies on; the file's keys are
// validated, by key path, in pkg/config.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{RoleARN: testRole}, ""},
		{Config{RoleARN: testRole, Duration: 12 * time.Hour}, ""},
		{Config{RoleARN: "arn:aws:iam::123456789012:user/bob"}, "role ARN: "},
		{Config{RoleARN: testRole, Duration: 14 * time.Minute}, "duration: 14m0s"},
		{Config{RoleARN: testRole, Duration: time.Hour + time.Millisecond}, "duration: "},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.c, err, tc.want)
		}
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
		if len(got) < 2 || len(got) > maxSessionName || !sessionNameRE.MatchString(got) {
			t.Errorf("DefaultSessionName(%q) = %q is not a valid RoleSessionName", tc.host, got)
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

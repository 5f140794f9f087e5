package imds

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// checkGolden compares got with testdata/<name>.golden, or rewrites it
// with -update.
func checkGolden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestGoldenDocuments(t *testing.T) {
	creds := testCreds(1)
	creds.SecretAccessKey = `wJalrXUtnFEMI/K7MDENG/bPxRfiCY"<&>EXAMPLEKEY` // JSON escaping
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		path string
	}{
		{"credentials", nil, "/latest/meta-data/iam/security-credentials/test-role"},
		{"credentials-extended", nil, "/latest/meta-data/iam/security-credentials-extended/test-role"},
		{"iam-info", nil, "/latest/meta-data/iam/info"},
		{"identity-document", nil, "/latest/dynamic/instance-identity/document"},
		{"identity-document-configured", func(c *Config) {
			c.RoleARN = "arn:aws-cn:iam::210987654321:role/svc/app"
			c.AvailabilityZone = "cn-northwest-1c"
			c.InstanceID = "i-0123456789abcdef0"
			c.ImageID = "ami-0fedcba9876543210"
			c.InstanceType = "m5.large"
			c.Architecture = "arm64"
			c.LocalIPv4 = netip.MustParseAddr("192.0.2.7")
			c.PendingTime = time.Date(2025, 12, 24, 18, 0, 0, 999, time.FixedZone("X", 3600))
		}, "/latest/dynamic/instance-identity/document"},
		{"listing-root", nil, "/"},
		{"listing-latest-with-user-data", func(c *Config) { c.UserData = []byte("#!/bin/sh\n") }, "/latest/"},
		{"listing-meta-data", nil, "/latest/meta-data/"},
		{"listing-meta-data-tags", func(c *Config) {
			c.Tags = map[string]string{"Name": "build box", "Env": "ci"}
		}, "/latest/meta-data/"},
		{"listing-tags", func(c *Config) {
			c.Tags = map[string]string{"Name": "build box", "Env": "ci", "team:owner": "infra"}
		}, "/latest/meta-data/tags/instance"},
		{"error-404", nil, "/latest/meta-data/nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.TokenMode = TokenOptional
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			e := newEnv(t, cfg)
			c := creds
			c.RoleARN = cfg.RoleARN
			e.src.set(c, nil)
			w := e.do("GET", tc.path, nil)
			checkGolden(t, tc.name, w.Body.String())
		})
	}
}

func TestCredentialDocumentShape(t *testing.T) {
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	e := newEnv(t, cfg)
	body := e.do("GET", "/latest/meta-data/iam/security-credentials/test-role", nil).Body.String()
	// Whole-second UTC timestamps with Z, whatever the source's precision.
	for _, want := range []string{`"LastUpdated" : "2026-05-17T11:59:00Z"`, `"Expiration" : "2026-05-17T13:00:00Z"`} {
		if !strings.Contains(body, want) {
			t.Errorf("document lacks %s:\n%s", want, body)
		}
	}
}

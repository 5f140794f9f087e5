package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

func TestCLI(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("imds: {tokens: x}\nduration: 1m\n"), 0o600)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("role_arn: arn:aws:iam::123456789012:role/app\nnetwork: {manage: false}\n"), 0o600)
	tests := []struct {
		args     []string
		code     int
		out, err string
		notOut   string
	}{
		{nil, 64, "", "Usage:", ""},
		{[]string{"help"}, 0, "Exit codes:", "", ""},
		{[]string{"--help"}, 0, "imds-shim serve", "", ""},
		{[]string{"version"}, 0, "imds-shim ", "", ""},
		{[]string{"bogus"}, 64, "", `unknown command "bogus"`, ""},
		{[]string{"serve", "--help"}, 0, "configuration", "", ""},
		{[]string{"check", "-h"}, 0, "-no-sts", "", ""},
		{[]string{"cleanup", "--help"}, 0, "Usage: imds-shim cleanup", "", ""},
		{[]string{"status", "--help"}, 0, "-json", "", ""},
		{[]string{"serve", "--nope"}, 64, "", "flag provided but not defined", ""},
		{[]string{"check", "-c", good, "extra"}, 64, "", `unexpected argument "extra"`, ""},
		{[]string{"check", "-c", filepath.Join(dir, "missing.yaml")}, 3, "", "reading config", ""},
		{[]string{"check", "-c", bad}, 3, "", "imds.tokens", ""},
		{[]string{"check", "-c", good, "--no-sts"}, 0, "network:   not managed", "", "network plan"},
		{[]string{"status", "--socket", filepath.Join(dir, "none.sock")}, 1, "", "is imds-shim running?", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, &out, &errb)
			}
			if !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("stdout %q want %q; stderr %q want %q", out.String(), tt.out, errb.String(), tt.err)
			}
			if tt.notOut != "" && strings.Contains(out.String(), tt.notOut) {
				t.Errorf("stdout has %q", tt.notOut)
			}
		})
	}
}

// TestCheckListsEveryProblemOnce: config, credentials and API findings all
// appear in one run, none twice.
func TestCheckListsEveryProblemOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("imds: {tokens: x}\nduration: 1m\nmetadata: {instance_id: bogus}\n"), 0o600)
	_, err := loadConfig(p)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"role_arn: required", "imds.tokens", "duration: 1m0s", "bogus"} {
		if strings.Count(msg, want) != 1 {
			t.Errorf("%q appears %d times in:\n%s", want, strings.Count(msg, want), msg)
		}
	}
}

func TestMetricsObserver(t *testing.T) {
	m := newMetrics("test")
	for range 3 {
		m.Request("credentials", 200)
	}
	m.Request("token", 400)
	m.Request("unexpected-class", 999)
	m.roleObserver("host").RefreshFailed("throttling")
	m.Repaired("address")
	m.CredentialsUnavailable(errors.New("x"))
	if got := testutil.ToFloat64(m.requests.WithLabelValues("credentials", "200")); got != 3 {
		t.Errorf("credentials/200 = %v", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("unexpected-class", "999")); got != 1 {
		t.Errorf("odd class counted %v", got)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues("host", "throttling")); got != 1 {
		t.Errorf("failures = %v", got)
	}
	if got := testutil.ToFloat64(m.unavailable); got != 1 {
		t.Errorf("unavailable = %v", got)
	}
	// No credential set yet: no role's expiry to report.
	if n, err := testutil.GatherAndCount(m.reg, "imds_shim_credentials_expiry_seconds", "imds_shim_build_info"); err != nil || n != 1 {
		t.Errorf("gather: %d %v", n, err)
	}
	m.ConnectionOpened()
	m.ConnectionOpened()
	m.ConnectionClosed(daemon.ClosedIdleTimeout)
	if got := testutil.ToFloat64(m.conns); got != 1 {
		t.Errorf("open connections = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.connsClosed.WithLabelValues("idle_timeout")); got != 1 {
		t.Errorf("closed for idle_timeout = %v, want 1", got)
	}
	// Every reason is exported from the start, at 0 until it happens.
	if n, err := testutil.GatherAndCount(m.reg, "imds_shim_connections_closed_total"); err != nil || n != 5 {
		t.Errorf("imds_shim_connections_closed_total has %d series (%v), want 5", n, err)
	}
	before := testutil.ToFloat64(m.requests.WithLabelValues("credentials", "200"))
	m.Request("credentials", 200)
	m.Request("credentials", 200)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("credentials", "200")); got != before+2 {
		t.Errorf("requests{credentials,200} = %v, want %v", got, before+2)
	}
}

// TestSourceFingerprint: rotating the key inside an unchanged
// credentials_file must count as a credential change on reload, and the
// fingerprint, which is compared and may be logged, carries no part of the
// file: not the secret as such nor hex- or base64-encoded, and its size does
// not follow the file's.
func TestSourceFingerprint(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	cfg := filepath.Join(dir, "c.yaml")
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	write := func(p, body string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	load := func() string {
		t.Helper()
		c, err := loadConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c.SourceFingerprint
	}
	write(cfg, "role_arn: arn:aws:iam::123456789012:role/app\ncredentials_file: "+creds+"\nnetwork: {manage: false}\n")
	write(creds, "[default]\naws_access_key_id = AKIAOLD\naws_secret_access_key = "+secret+"\n")
	a, b := load(), load()
	write(creds, "[default]\naws_access_key_id = AKIANEW\naws_secret_access_key = new\n")
	c := load()
	if a == "" || a != b || a == c {
		t.Errorf("fingerprints: same file %q/%q, rotated %q", a, b, c)
	}
	for name, enc := range map[string]string{"as is": secret, "hex": hex.EncodeToString([]byte(secret)),
		"base64": base64.StdEncoding.EncodeToString([]byte(secret)), "base64url": base64.RawURLEncoding.EncodeToString([]byte(secret))} {
		for _, part := range []string{enc, enc[:len(enc)/2], enc[len(enc)/2:]} {
			if strings.Contains(a, part) {
				t.Errorf("the fingerprint %q carries the secret (%s)", a, name)
			}
		}
	}
	write(creds, "[default]\naws_access_key_id = AKIABIG\naws_secret_access_key = "+strings.Repeat(secret, 50)+"\n")
	if big := load(); len(big) != len(a) {
		t.Errorf("the fingerprint grows with the file (%d bytes, then %d): it carries content", len(a), len(big))
	}
}

func TestCheckReadsMetadataDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte("role_arn: arn:aws:iam::123456789012:role/app\nimds: {metadata_dir: /nonexistent/imds-shim}\n"), 0o600)
	if _, err := loadConfig(p); err == nil || !strings.Contains(err.Error(), "imds.metadata_dir") {
		t.Errorf("loadConfig with a missing metadata_dir: %v", err)
	}
}

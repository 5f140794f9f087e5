package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/callers"
)

// problemKeys returns the key path each line of check's error names.
func problemKeys(t *testing.T, stderr, path string) []string {
	t.Helper()
	s := strings.TrimPrefix(strings.TrimSpace(stderr), "imds-shim check: config "+path+": ")
	var keys []string
	for _, line := range strings.Split(s, "\n") {
		key, _, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("line without a key: %q in\n%s", line, stderr)
		}
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys
}

// TestCheckNamesEveryKeyOnce: an unknown key does not hide the other
// problems, and each key is named once.
func TestCheckNamesEveryKeyOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte(`role_arn: arn:aws:iam::123456789012:user/bob
imds:
  listen: "127.0.0.1"
network:
  link: "eth/0"
colour: blue
`), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-c", p, "--no-sts"}, &out, &errb); code != 3 {
		t.Fatalf("exit %d, want 3\n%s%s", code, &out, &errb)
	}
	want := []string{"colour", "imds.listen", "network.link", "role_arn"}
	if d := cmp.Diff(want, problemKeys(t, errb.String(), p)); d != "" {
		t.Errorf("keys named (-want +got):\n%s\n%s", d, &errb)
	}
}

func TestCheckWarnsAboutReadableCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("ownership warnings assume the test runs as root")
	}
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	os.WriteFile(creds, []byte("[default]\n"), 0o644)
	os.Chmod(creds, 0o644)
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("role_arn: arn:aws:iam::123456789012:role/app\nnetwork: {manage: false}\nimds: {listen: '127.0.0.1:8254'}\ncredentials_file: "+creds+"\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-c", p, "--no-sts"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, &out, &errb)
	}
	var warnings []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "warning:") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 2 || !strings.Contains(warnings[1], creds) || !strings.Contains(warnings[1], "0644") ||
		!strings.Contains(warnings[0], "imds.listen") || !strings.Contains(warnings[0], "unprivileged") {
		t.Errorf("warnings %q, want the unprivileged port and %s at 0644", warnings, creds)
	}
	if !strings.Contains(out.String(), "reachable by processes on this host only") {
		t.Errorf("check does not say who can reach the listener:\n%s", &out)
	}
	if !strings.Contains(out.String(), "port 9254: any local user may bind it first") {
		t.Errorf("check does not say that the default metrics port can be taken:\n%s", &out)
	}
}

func TestCheckPrintsCallerTable(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte(`network: {manage: false}
imds: {listen: '127.0.0.1:254'}
role_arn: arn:aws:iam::123456789012:role/host
roles:
  - role_arn: arn:aws:iam::123456789012:role/backup
    units: [backup.service]
  - role_arn: arn:aws:iam::123456789012:role/web
    users: [no-such-user-p1, "1001"]
    groups: [web-p1-missing]
    caller_source_identity: true
`), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-c", p, "--no-sts"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, &out, &errb)
	}
	for _, want := range []string{
		"  roles[0]: backup <- units=backup.service\n",
		"  roles[1]: web <- users=no-such-user-p1,1001 groups=web-p1-missing (a session per caller, sts:SourceIdentity = its name, at most 64)\n",
		"  default:  host (host callers matching no entry; containers only through sources or this)\n",
		"  unidentified: no role\n",
		"cgroups:   " + callers.DetectLayout().Describe() + "\n",
		`warning:   roles[1].users[0]: no user "no-such-user-p1" in /etc/passwd: it matches nobody` + "\n",
		`warning:   roles[1].groups[0]: no group "web-p1-missing" in /etc/group: it matches nobody` + "\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, &out)
		}
	}
	if !strings.Contains(out.String(), "identify:  ok (this process is seen as uid=") && !strings.Contains(out.String(), "caller identification self-test") {
		t.Errorf("check does not report the identification self-test:\n%s", &out)
	}
}

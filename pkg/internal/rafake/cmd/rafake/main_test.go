package main_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imds-shim/imds-shim/pkg/credentials"
)

// TestStandaloneProcess builds and runs rafake as the real binary's tests
// do (-gen writes the host's certificate and key), then obtains a session
// from it with the roles_anywhere source.
func TestStandaloneProcess(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain on PATH")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "rafake")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	pki := filepath.Join(dir, "pki")
	cmd := exec.Command(bin, "-gen", pki, "-key-type", "rsa2048", "-role-arn",
		"arn:aws:iam::123456789012:role/host-bootstrap,arn:aws:iam::123456789012:role/other")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("rafake stderr:\n%s", stderr.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var url string
	select {
	case l := <-lines:
		var ok bool
		if url, ok = strings.CutPrefix(l, "rafake listening on "); !ok {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("rafake did not report its address")
	}
	for _, f := range []string{"ca.pem", "host.pem", "host.key"} {
		if _, err := os.Stat(filepath.Join(pki, f)); err != nil {
			t.Fatal(err)
		}
	}
	ra, err := credentials.NewRolesAnywhere(credentials.RolesAnywhereConfig{
		CertificateFile: filepath.Join(pki, "host.pem"), PrivateKeyFile: filepath.Join(pki, "host.key"),
		TrustAnchorARN: "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
		ProfileARN:     "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809",
		RoleARN:        "arn:aws:iam::123456789012:role/other", Endpoint: url,
	}, credentials.RolesAnywhereOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ra.CreateSession(t.Context(), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.Expires); d < 14*time.Minute || d > 16*time.Minute || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
		t.Errorf("session %v", c)
	}
	rep, err := credentials.CheckRolesAnywhere(ra.Config(), time.Now())
	if err != nil || rep.Intermediates != 1 || rep.KeyType != "RSA-2048" {
		t.Errorf("check of the generated files: %+v, %v", rep, err)
	}
}

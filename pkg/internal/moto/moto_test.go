package moto

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// assumeRole sends a minimal AssumeRole form. The fake Authorization header
// routes the request to moto's STS (unsigned requests go to its S3).
func assumeRole(t *testing.T, base string) (int, string) {
	t.Helper()
	form := url.Values{
		"Action":          {"AssumeRole"},
		"Version":         {"2011-06-15"},
		"RoleArn":         {"arn:aws:iam::111122223333:role/probe"},
		"RoleSessionName": {"probe"},
	}
	req, err := http.NewRequest(http.MethodPost, base+"/", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("calling moto: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStartServesSTSAndStopsCleanly(t *testing.T) {
	p, err := StartProcess(context.Background(), "127.0.0.1", nil)
	if errors.Is(err, ErrUnavailable) && os.Getenv("CI") == "" {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	code, body := assumeRole(t, p.URL)
	if code != http.StatusOK || !strings.Contains(body, "arn:aws:sts::111122223333:assumed-role/probe/probe") {
		t.Fatalf("AssumeRole = %d %q, want 200 with the assumed-role ARN", code, body)
	}
	if err := p.Reset(context.Background()); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	pgid := p.cmd.Process.Pid
	p.Stop()
	p.Stop() // idempotent
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d still exists after Stop (kill 0: %v)", pgid, err)
	}
}

func TestStartHelperRegistersCleanup(t *testing.T) {
	var srv *Server
	t.Run("inner", func(t *testing.T) {
		srv = Start(t, "127.0.0.1")
		srv.Reset()
	})
	if srv == nil {
		t.Skip("moto unavailable")
	}
	if err := syscall.Kill(-srv.proc.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("moto still running after the subtest ended (kill 0: %v)", err)
	}
}

func TestUnavailable(t *testing.T) {
	t.Run("no python3", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := StartProcess(context.Background(), "127.0.0.1", nil)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("no moto module", func(t *testing.T) {
		dir := t.TempDir()
		script := "#!/bin/sh\necho \"/usr/bin/python3: No module named moto.server\" >&2\nexit 1\n"
		if err := os.WriteFile(filepath.Join(dir, "python3"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", dir)
		_, err := StartProcess(context.Background(), "127.0.0.1", nil)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
}

package imds

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeTree creates files (path → content) under dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMetadataDir(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"meta-data/instance-id":                 "i-0aaaaaaaaaaaaaaaa\n",
		"meta-data/instance-type":               "m7i.xlarge\r\n",
		"meta-data/public-keys/0/openssh-key":   "ssh-ed25519 AAAAC3Nz test",
		"meta-data/placement/region":            "eu-north-1",
		"meta-data/placement/availability-zone": "eu-north-1b",
		"user-data":                             "#cloud-config\nruncmd: []\n",
		".hidden":                               "ignored",
		"meta-data/.swp":                        "ignored",
		".git/config":                           "ignored",
		"dynamic/fws/instance-monitoring":       "disabled",
	})
	if err := os.Symlink("instance-type", filepath.Join(dir, "meta-data", "profile")); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	cfg.MetadataDir = dir
	cfg.Overrides = map[string]string{"meta-data/instance-type": "c7g.large"} // Overrides beat the dir
	e := newEnv(t, cfg)
	var got []string
	for _, p := range []string{
		"meta-data/instance-id", "meta-data/instance-type", "meta-data/profile",
		"meta-data/public-keys/0/openssh-key", "meta-data/public-keys/", "meta-data/public-keys/0",
		"meta-data/placement/region", "user-data", "dynamic/fws/instance-monitoring", "dynamic/",
		"meta-data/.swp", ".hidden",
	} {
		w := e.do("GET", "/latest/"+p, nil)
		body := w.Body.String()
		if w.Code != 200 {
			body = ""
		}
		got = append(got, p+" "+w.Header().Get("Content-Type")+" "+strconv.Itoa(w.Code)+" "+body)
	}
	want := []string{
		"meta-data/instance-id text/plain 200 i-0aaaaaaaaaaaaaaaa",
		"meta-data/instance-type text/plain 200 c7g.large",
		"meta-data/profile text/plain 200 m7i.xlarge",
		"meta-data/public-keys/0/openssh-key text/plain 200 ssh-ed25519 AAAAC3Nz test",
		"meta-data/public-keys/ text/plain 200 0/",
		"meta-data/public-keys/0 text/plain 200 openssh-key",
		"meta-data/placement/region text/plain 200 eu-north-1",
		"user-data application/octet-stream 200 #cloud-config\nruncmd: []\n",
		"dynamic/fws/instance-monitoring text/plain 200 disabled",
		"dynamic/ text/plain 200 fws/\ninstance-identity/",
		"meta-data/.swp text/html 404 ",
		".hidden text/html 404 ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("served (-want +got):\n%s", diff)
	}
	// The identity document follows the overridden values.
	doc := e.do("GET", "/latest/dynamic/instance-identity/document", nil).Body.String()
	for _, w := range []string{`"instanceId" : "i-0aaaaaaaaaaaaaaaa"`, `"instanceType" : "c7g.large"`, `"region" : "eu-north-1"`, `"availabilityZone" : "eu-north-1b"`} {
		if !strings.Contains(doc, w) {
			t.Errorf("document lacks %s:\n%s", w, doc)
		}
	}

	// The dir is read at build/Update time, not per request.
	writeTree(t, dir, map[string]string{"meta-data/instance-id": "i-0bbbbbbbbbbbbbbbb"})
	if b := e.do("GET", "/latest/meta-data/instance-id", nil).Body.String(); b != "i-0aaaaaaaaaaaaaaaa" {
		t.Errorf("change visible before Update: %q", b)
	}
	if err := e.srv.Update(cfg, e.src); err != nil {
		t.Fatal(err)
	}
	if b := e.do("GET", "/latest/meta-data/instance-id", nil).Body.String(); b != "i-0bbbbbbbbbbbbbbbb" {
		t.Errorf("after Update: %q", b)
	}
}

func TestMetadataDirRejects(t *testing.T) {
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret": "root-only"})
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"symlink escaping", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"meta-data/x": "1"})
			os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "meta-data", "leak"))
		}, "meta-data/leak"},
		{"relative symlink escaping", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "meta-data"), 0o755)
			os.Symlink("../../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "meta-data", "leak"))
		}, "meta-data/leak"},
		{"symlinked directory", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "meta-data", "real"), 0o755)
			os.Symlink("real", filepath.Join(dir, "meta-data", "alias"))
		}, "not a regular file"},
		{"huge file", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"user-data": strings.Repeat("x", MaxMetadataFileSize+1)})
		}, "exceed the 65536-byte limit"},
		{"too much in total", func(t *testing.T, dir string) {
			files := map[string]string{}
			for i := range 17 {
				files["meta-data/big/"+string(rune('a'+i))] = strings.Repeat("x", MaxMetadataFileSize)
			}
			writeTree(t, dir, files)
		}, "in total"},
		{"fifo", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "meta-data"), 0o755)
			if err := syscall.Mkfifo(filepath.Join(dir, "meta-data", "pipe"), 0o644); err != nil {
				t.Skip(err)
			}
		}, "meta-data/pipe: not a regular file"},
		{"symlink to fifo", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "meta-data"), 0o755)
			if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
				t.Skip(err)
			}
			os.Symlink("../pipe", filepath.Join(dir, "meta-data", "p"))
		}, "meta-data/p: not a regular file"},
		{"newline in name", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"meta-data/a\nb": "1"})
		}, "control characters"},
		{"iam reserved", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"meta-data/iam/security-credentials/test-role": "{}"})
		}, "reserved"},
		{"unknown top level", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"api/token": "x"})
		}, `top level "api"`},
		{"value and directory", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"meta-data/placement": "x"})
		}, "meta-data/placement is both a value and a directory"},
		{"user-data directory", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"user-data/x": "x"})
		}, "user-data is a value"},
		{"too deep", func(t *testing.T, dir string) {
			writeTree(t, dir, map[string]string{"meta-data/a/b/c/d/e/f/g/h/i": "x"})
		}, "deeper than 8"},
		{"missing dir", func(t *testing.T, dir string) { os.RemoveAll(dir) }, "opening metadata dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "md")
			os.Mkdir(dir, 0o755)
			tc.setup(t, dir)
			cfg := baseConfig()
			cfg.TokenMode = TokenOptional
			e := newEnv(t, cfg)
			before := e.do("GET", "/latest/meta-data/", nil).Body.String()
			cfg.MetadataDir = dir
			err := e.srv.Update(cfg, e.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Update = %v, want error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "root-only") {
				t.Errorf("error leaks file content: %v", err)
			}
			if after := e.do("GET", "/latest/meta-data/", nil).Body.String(); after != before {
				t.Errorf("failed Update changed the tree")
			}
		})
	}
}

func TestUserDataBytes(t *testing.T) {
	cfg := baseConfig()
	cfg.TokenMode = TokenOptional
	cfg.UserData = []byte{0x1f, 0x8b, 0x00, '\n', 0xff}
	e := newEnv(t, cfg)
	w := e.do("GET", "/latest/user-data", nil)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), cfg.UserData) {
		t.Errorf("user-data: %d %q", w.Code, w.Body.Bytes())
	}
	if w := e.do("GET", "/latest/", nil); w.Body.String() != "dynamic\nmeta-data\nuser-data" {
		t.Errorf("listing %q", w.Body.String())
	}
}

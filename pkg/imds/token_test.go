package imds

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTokenIssueVerify(t *testing.T) {
	k, _ := newTokenKey(testKey)
	exp := t0.Add(90 * time.Second)
	tok, err := k.issue(exp, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != tokenLen {
		t.Fatalf("len = %d, want %d", len(tok), tokenLen)
	}
	got, ok := k.verify(tok, "")
	if !ok || !got.Equal(exp) {
		t.Errorf("verify = %v, %v; want %v, true", got, ok, exp)
	}
	// Any single-character change is rejected.
	for i := range tok {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		if _, ok := k.verify(string(b), ""); ok {
			t.Errorf("token changed at %d still verifies", i)
		}
	}
	// Forging a later expiry without the key fails.
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[1]++
	if _, ok := k.verify(base64.RawURLEncoding.EncodeToString(raw), ""); ok {
		t.Error("token with a forged expiry verifies")
	}
	other, _ := newTokenKey([]byte("ANOTHER-KEY-ANOTHER-KEY-ANOTHER-"))
	if _, ok := other.verify(tok, ""); ok {
		t.Error("token verifies under another key")
	}
}

// The MAC covers the caller binding: a token minted for one caller is
// refused for another, and for none.
func TestTokenBinding(t *testing.T) {
	k, _ := newTokenKey(testKey)
	exp := t0.Add(time.Minute)
	tok, err := k.issue(exp, "uid=1000")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := k.verify(tok, "uid=1000"); !ok || !got.Equal(exp) {
		t.Errorf("verify for the same binding = %v, %v; want %v, true", got, ok, exp)
	}
	for _, other := range []string{"uid=1001", "", "uid=10000", "uid=100"} {
		if _, ok := k.verify(tok, other); ok {
			t.Errorf("token for uid=1000 verifies for %q", other)
		}
	}
	unbound, _ := k.issue(exp, "")
	if _, ok := k.verify(unbound, "uid=1000"); ok {
		t.Error("unbound token verifies for uid=1000")
	}
}

// Through the handler: a token issued to one caller is 401 for another.
func TestTokenBindingHandler(t *testing.T) {
	var caller string
	e := newEnv(t, baseConfig())
	host := testHost
	srv, err := NewServer(baseConfig(), e.src, Options{TokenKey: testKey, Host: &host, Now: e.clock.Now,
		TokenBinding: func(*http.Request) string { return caller }})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	caller = "A"
	tok := e.token(t, "60")
	path := "/latest/meta-data/iam/security-credentials/test-role"
	if w := e.do("GET", path, map[string]string{"X-aws-ec2-metadata-token": tok}); w.Code != 200 {
		t.Fatalf("caller A with its own token: %d", w.Code)
	}
	caller = "B"
	if w := e.do("GET", path, map[string]string{"X-aws-ec2-metadata-token": tok}); w.Code != 401 {
		t.Errorf("caller B with A's token: %d, want 401", w.Code)
	}
}

// The server keeps nothing per token: after 50,000 distinct valid tokens
// and as many forged ones, the live heap has not grown.
func TestTokenMemoryFlat(t *testing.T) {
	e := newEnv(t, baseConfig())
	e.srv.obs = NopObserver{}
	path := "/latest/meta-data/iam/security-credentials/test-role"
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	e.do("GET", path, map[string]string{"X-aws-ec2-metadata-token": e.token(t, "60")}) // renders the documents
	before := heap()
	for i := range 50000 {
		tok := e.token(t, "60")
		if w := e.do("GET", path, map[string]string{"X-aws-ec2-metadata-token": tok}); w.Code != 200 {
			t.Fatalf("valid token %d: %d", i, w.Code)
		}
		forged := []byte(tok)
		forged[i%tokenLen] ^= 1
		if w := e.do("GET", path, map[string]string{"X-aws-ec2-metadata-token": string(forged)}); w.Code != 401 {
			t.Fatalf("forged token %d: %d", i, w.Code)
		}
	}
	if after := heap(); after > before+256<<10 {
		t.Errorf("live heap grew from %d to %d bytes over 100,000 tokens", before, after)
	}
}

func TestParseTokenTTL(t *testing.T) {
	for in, want := range map[string]int{
		"1": 1, "21600": 21600, "300": 300, "0000060": 60,
		"0": -1, "21601": -1, "": -1, "-1": -1, "+5": -1, " 5": -1, "5 ": -1, "1e3": -1,
		"99999999999": -1, "4294967297": -1, "６０": -1,
	} {
		got, ok := parseTokenTTL(in)
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("parseTokenTTL(%q) = %d, want %d", in, got, want)
		}
	}
}

func FuzzToken(f *testing.F) {
	k, _ := newTokenKey(testKey)
	valid, _ := k.issue(t0.Add(time.Minute), "")
	for _, s := range []string{valid, "", "====", strings.Repeat("A", tokenLen), valid[:63] + "=", strings.Repeat("_", 64), "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, ok := k.verify(s, "")
		if !ok {
			return
		}
		// Only tokens this key issued verify: the MAC must check out
		// against crypto/hmac and the encoding must round-trip.
		raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil || len(raw) != tokenRawLen {
			t.Fatalf("verify accepted %q, which does not decode strictly (%v)", s, err)
		}
		h := hmac.New(sha256.New, testKey)
		h.Write(raw[:tokenPayloadLen])
		if !hmac.Equal(h.Sum(nil), raw[tokenPayloadLen:]) {
			t.Fatalf("verify accepted %q with a bad MAC", s)
		}
		if want := int64(binary.BigEndian.Uint64(raw[1:9])); exp.UnixNano() != want {
			t.Fatalf("verify returned expiry %d, token says %d", exp.UnixNano(), want)
		}
	})
}

func TestLoadOrCreateTokenKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token.key")
	k1, err := LoadOrCreateTokenKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) != TokenKeySize || st.Mode().Perm() != 0o600 {
		t.Errorf("created key: %d bytes, mode %v; want %d, 0600", len(k1), st.Mode().Perm(), TokenKeySize)
	}
	k2, err := LoadOrCreateTokenKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("second load: %v, same=%v", err, bytes.Equal(k1, k2))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".token-key-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	// Concurrent starters agree on one key.
	path2 := filepath.Join(dir, "race.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateTokenKey(path2)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for i := range keys {
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("starter %d got a different key", i)
		}
	}

	for name, tc := range map[string]struct {
		data []byte
		mode os.FileMode
		want string
	}{
		"short":          {[]byte("short"), 0o600, "has 5 bytes"},
		"world-readable": {bytes.Repeat([]byte{1}, 32), 0o644, "accessible by group or others"},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, tc.data, tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tc.mode)
		if _, err := LoadOrCreateTokenKey(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	if _, err := LoadOrCreateTokenKey(filepath.Join(dir, "missing-dir", "k")); err == nil {
		t.Error("key created in a missing directory")
	}
	// Tokens survive a restart with the same key file.
	srvA, _ := NewServer(baseConfig(), &fakeSource{}, Options{TokenKey: k1, Host: &HostFacts{}, Now: func() time.Time { return t0 }})
	srvB, _ := NewServer(baseConfig(), &fakeSource{}, Options{TokenKey: k2, Host: &HostFacts{}, Now: func() time.Time { return t0 }})
	tok, _ := srvA.key.issue(t0.Add(time.Minute), "")
	if _, ok := srvB.key.verify(tok, ""); !ok {
		t.Error("token from before the restart is rejected")
	}
}

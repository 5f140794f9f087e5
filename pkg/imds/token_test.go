package imds

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTokenMACMatchesCryptoHMAC(t *testing.T) {
	for _, key := range [][]byte{testKey, bytes.Repeat([]byte{7}, 100)} {
		k, err := newTokenKey(key)
		if err != nil {
			t.Fatal(err)
		}
		var p [tokenPayloadLen]byte
		copy(p[:], "payload-1234567")
		h := hmac.New(sha256.New, key)
		h.Write(p[:])
		if got := k.mac(&p); !bytes.Equal(got[:], h.Sum(nil)) {
			t.Errorf("key len %d: mac differs from crypto/hmac", len(key))
		}
	}
}

func TestTokenIssueVerify(t *testing.T) {
	k, _ := newTokenKey(testKey)
	exp := t0.Add(90 * time.Second)
	tok, err := k.issue(exp)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != tokenLen {
		t.Fatalf("len = %d, want %d", len(tok), tokenLen)
	}
	got, ok := k.verify(tok)
	if !ok || got != exp.UnixNano() {
		t.Errorf("verify = %d, %v; want %d, true", got, ok, exp.UnixNano())
	}
	// Any single-character change is rejected.
	for i := range tok {
		b := []byte(tok)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		if _, ok := k.verify(string(b)); ok {
			t.Errorf("token changed at %d still verifies", i)
		}
	}
	// Forging a later expiry without the key fails.
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[1]++
	if _, ok := k.verify(base64.RawURLEncoding.EncodeToString(raw)); ok {
		t.Error("token with a forged expiry verifies")
	}
	other, _ := newTokenKey([]byte("ANOTHER-KEY-ANOTHER-KEY-ANOTHER-"))
	if _, ok := other.verify(tok); ok {
		t.Error("token verifies under another key")
	}
}

// Verified tokens are remembered per key: a second verify of the same
// token answers the same expiry from the cache, tokens sharing a slot
// replace each other and still verify, and a remembered token never lets a
// different one through.
func TestTokenVerifyRemembers(t *testing.T) {
	k, _ := newTokenKey(testKey)
	var toks []string
	var exps []int64
	for i := range 5 * seenSlots {
		exp := t0.Add(time.Duration(i+1) * time.Second)
		tok, err := k.issue(exp)
		if err != nil {
			t.Fatal(err)
		}
		toks, exps = append(toks, tok), append(exps, exp.UnixNano())
	}
	for pass := range 3 {
		for i, tok := range toks {
			if got, ok := k.verify(tok); !ok || got != exps[i] {
				t.Fatalf("pass %d, token %d: verify = %d, %v; want %d, true", pass, i, got, ok, exps[i])
			}
		}
	}
	remembered := 0
	for i := range k.seen {
		if s := k.seen[i].Load(); s != nil {
			remembered++
			if s.tok[tokenLen-1]%seenSlots != byte(i) {
				t.Errorf("slot %d holds a token of slot %d", i, s.tok[tokenLen-1]%seenSlots)
			}
		}
	}
	if remembered == 0 || remembered > seenSlots {
		t.Errorf("%d tokens remembered, want 1..%d", remembered, seenSlots)
	}
	// Another key's token in the same slot as a remembered one is still
	// checked in full, and so is a remembered token with one byte changed.
	other, _ := newTokenKey([]byte("ANOTHER-KEY-ANOTHER-KEY-ANOTHER-"))
	for range 50 {
		forged, _ := other.issue(t0.Add(time.Hour))
		if _, ok := k.verify(forged); ok {
			t.Fatal("another key's token verifies")
		}
	}
	last := toks[len(toks)-1]
	k.verify(last)
	changed := []byte(last)
	changed[0] ^= 'A' ^ 'B'
	if _, ok := k.verify(string(changed)); ok {
		t.Error("a remembered token with its first byte changed verifies")
	}
	// Concurrent verifies of tokens that share slots (run with -race).
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				j := (i*7 + g) % len(toks)
				if got, ok := k.verify(toks[j]); !ok || got != exps[j] {
					t.Errorf("concurrent verify of token %d = %d, %v", j, got, ok)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestEqualConstantTime(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"", "", true}, {"abc", "abc", true}, {"abc", "abd", false}, {"abc", "bbc", false}, {"abc", "ab", false}} {
		if got := equalConstantTime(c.a, c.b); got != c.want {
			t.Errorf("equalConstantTime(%q, %q) = %v", c.a, c.b, got)
		}
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
	valid, _ := k.issue(t0.Add(time.Minute))
	for _, s := range []string{valid, "", "====", strings.Repeat("A", tokenLen), valid[:63] + "=", strings.Repeat("_", 64), "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, ok := k.verify(s)
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
		if want := int64(binary.BigEndian.Uint64(raw[1:9])); exp != want {
			t.Fatalf("verify returned expiry %d, token says %d", exp, want)
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
	tok, _ := srvA.key.issue(t0.Add(time.Minute))
	if _, ok := srvB.key.verify(tok); !ok {
		t.Error("token from before the restart is rejected")
	}
}

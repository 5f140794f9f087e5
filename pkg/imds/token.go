package imds

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Token TTL bounds, in seconds, as EC2 enforces them.
const (
	MinTokenTTL = 1
	MaxTokenTTL = 21600
)

// TokenKeySize is the HMAC key length LoadOrCreateTokenKey creates and
// NewServer requires at least.
const TokenKeySize = 32

// A token is base64url (no padding) of 48 bytes:
//
//	version(1) | expiry, Unix nanoseconds, big-endian (8) | nonce (7) | HMAC-SHA256 of the first 16 bytes (32)
//
// That is 64 header-safe characters with no newline. The server keeps no
// state per token: the MAC makes tokens unforgeable without the key, the
// expiry is inside the MAC, so memory is bounded whatever clients do, and a
// token stays valid across Update and, with a persistent key, restarts.
const (
	tokenVersion    = 1
	tokenPayloadLen = 16
	tokenRawLen     = tokenPayloadLen + sha256.Size
	tokenLen        = tokenRawLen * 4 / 3 // 64, no padding since 48 % 3 == 0
)

// tokenKey holds the HMAC key pads, precomputed so that verifying a token
// needs SHA-256 over stack buffers and no allocation.
type tokenKey struct {
	ipad, opad [sha256.BlockSize]byte
	// seen remembers tokens already verified: an SDK reuses its token for
	// every request of its life, so most requests present a token seen
	// before and skip the HMAC (about a third of the handler's time). A
	// token's slot is picked by its last character, which is MAC output;
	// a slot holds one token and a newer one replaces it, so memory stays
	// bounded whatever clients send, and only tokens that verified are
	// ever stored.
	seen [seenSlots]atomic.Pointer[seenToken]
}

const seenSlots = 16

type seenToken struct {
	tok string
	exp int64
}

func newTokenKey(key []byte) (*tokenKey, error) {
	if len(key) < TokenKeySize {
		return nil, fmt.Errorf("token key has %d bytes, need at least %d", len(key), TokenKeySize)
	}
	k := key
	if len(k) > sha256.BlockSize {
		s := sha256.Sum256(k)
		k = s[:]
	}
	var t tokenKey
	copy(t.ipad[:], k)
	copy(t.opad[:], k)
	for i := range t.ipad {
		t.ipad[i] ^= 0x36
		t.opad[i] ^= 0x5c
	}
	return &t, nil
}

// mac is HMAC-SHA256(key, payload) written out so that it does not allocate
// (crypto/hmac builds two hash.Hash values per call).
func (k *tokenKey) mac(payload *[tokenPayloadLen]byte) [sha256.Size]byte {
	var inner [sha256.BlockSize + tokenPayloadLen]byte
	copy(inner[:], k.ipad[:])
	copy(inner[sha256.BlockSize:], payload[:])
	ih := sha256.Sum256(inner[:])
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(outer[:], k.opad[:])
	copy(outer[sha256.BlockSize:], ih[:])
	return sha256.Sum256(outer[:])
}

// issue returns a token that expires at exp.
func (k *tokenKey) issue(exp time.Time) (string, error) {
	var raw [tokenRawLen]byte
	raw[0] = tokenVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(exp.UnixNano()))
	if _, err := rand.Read(raw[9:tokenPayloadLen]); err != nil {
		return "", fmt.Errorf("reading random nonce: %w", err)
	}
	m := k.mac((*[tokenPayloadLen]byte)(raw[:tokenPayloadLen]))
	copy(raw[tokenPayloadLen:], m[:])
	return base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// verify returns the token's expiry in Unix nanoseconds and whether the
// token is authentic. It does not look at the clock.
func (k *tokenKey) verify(tok string) (int64, bool) {
	if len(tok) != tokenLen {
		return 0, false
	}
	slot := &k.seen[tok[tokenLen-1]%seenSlots]
	if s := slot.Load(); s != nil && equalConstantTime(s.tok, tok) {
		return s.exp, true
	}
	var raw [tokenRawLen]byte
	if !decodeB64URL(raw[:], tok) {
		return 0, false
	}
	if raw[0] != tokenVersion {
		return 0, false
	}
	m := k.mac((*[tokenPayloadLen]byte)(raw[:tokenPayloadLen]))
	if subtle.ConstantTimeCompare(m[:], raw[tokenPayloadLen:]) != 1 {
		return 0, false
	}
	exp := int64(binary.BigEndian.Uint64(raw[1:9]))
	slot.Store(&seenToken{tok: tok, exp: exp})
	return exp, true
}

// equalConstantTime reports whether a and b, of equal length, are equal,
// in a time that does not depend on where they differ, as
// subtle.ConstantTimeCompare does for byte slices (converting a 64-byte
// string to one would allocate).
func equalConstantTime(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var d byte
	for i := 0; i < len(a); i++ {
		d |= a[i] ^ b[i]
	}
	return d == 0
}

// b64URLDecode maps base64url characters to their value, 0xff otherwise.
var b64URLDecode = func() (t [256]byte) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// decodeB64URL decodes s, whose length is a multiple of 4, into dst
// (len(s)*3/4 bytes) without converting s to a []byte.
func decodeB64URL(dst []byte, s string) bool {
	if len(s)%4 != 0 || len(dst) != len(s)/4*3 {
		return false
	}
	for i, j := 0, 0; i < len(s); i, j = i+4, j+3 {
		a, b, c, d := b64URLDecode[s[i]], b64URLDecode[s[i+1]], b64URLDecode[s[i+2]], b64URLDecode[s[i+3]]
		if a|b|c|d == 0xff {
			return false
		}
		v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6 | uint32(d)
		dst[j], dst[j+1], dst[j+2] = byte(v>>16), byte(v>>8), byte(v)
	}
	return true
}

// parseTokenTTL parses the X-aws-ec2-metadata-token-ttl-seconds value: ASCII
// digits only (no sign, no spaces), 1..21600.
func parseTokenTTL(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n < MinTokenTTL || n > MaxTokenTTL {
		return 0, false
	}
	return n, true
}

// LoadOrCreateTokenKey returns the token HMAC key stored at path, creating
// it (TokenKeySize random bytes, mode 0600) when the file does not exist.
// Keep it in the runtime directory (tmpfs): tokens then survive a daemon
// restart but not a reboot, and the key never reaches persistent disk.
// An existing key must be at least TokenKeySize bytes and not readable by
// group or others.
func LoadOrCreateTokenKey(path string) ([]byte, error) {
	key, err := readTokenKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, TokenKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating token key: %w", err)
	}
	// Write a temporary file and link it into place, so that a concurrent
	// starter never reads a half-written key and exactly one key wins.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-key-*")
	if err != nil {
		return nil, fmt.Errorf("creating token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("creating token key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("writing token key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("writing token key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readTokenKey(path)
		}
		return nil, fmt.Errorf("installing token key: %w", err)
	}
	return key, nil
}

func readTokenKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening token key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening token key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("token key %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("token key %s is accessible by group or others (mode %v)", path, st.Mode().Perm())
	}
	const maxKey = 4096
	key, err := io.ReadAll(io.LimitReader(f, maxKey+1))
	if err != nil {
		return nil, fmt.Errorf("reading token key %s: %w", path, err)
	}
	if len(key) < TokenKeySize || len(key) > maxKey {
		return nil, fmt.Errorf("token key %s has %d bytes, want %d..%d", path, len(key), TokenKeySize, maxKey)
	}
	return key, nil
}

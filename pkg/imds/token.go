package imds

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
//	version(1) | expiry, Unix nanoseconds, big-endian (8) | nonce (7) | MAC (32)
//
// where MAC is HMAC-SHA256 over the first 16 bytes followed by the caller
// binding. That is 64 header-safe characters with no newline. The server
// keeps no state per token: the MAC makes tokens unforgeable without the
// key, the expiry is inside the MAC, so memory is bounded whatever clients
// do, and a token stays valid across Update and, with a persistent key,
// restarts.
//
// The caller binding is an opaque string the handler derives from the
// request (Options.TokenBinding; empty by default). It is not in the
// token, only in the MAC: a token minted for one binding does not verify
// for another, so a token presented by a different caller is refused.
const (
	tokenVersion    = 1
	tokenPayloadLen = 16
	tokenRawLen     = tokenPayloadLen + sha256.Size
	tokenLen        = tokenRawLen * 4 / 3 // 64, no padding since 48 % 3 == 0
)

// tokenEncoding is the token's text form: base64url, no padding, and no
// second spelling of the same bytes.
var tokenEncoding = base64.RawURLEncoding.Strict()

// tokenKey issues and verifies tokens with one HMAC key.
type tokenKey struct {
	key []byte
	// macs holds *tokenMAC for reuse: hmac.New hashes the key into its
	// pads and allocates two digests, which was most of the cost of
	// checking a token; Reset restores a hasher to just after keying.
	macs sync.Pool
}

// tokenMAC is a keyed HMAC-SHA256 with room to decode a token, copy the
// binding (the hasher takes bytes, not strings) and hold the expected MAC,
// so verifying allocates nothing.
type tokenMAC struct {
	h        hash.Hash
	raw, sum [tokenRawLen]byte
	binding  []byte
}

func newTokenKey(key []byte) (*tokenKey, error) {
	if len(key) < TokenKeySize {
		return nil, fmt.Errorf("token key has %d bytes, need at least %d", len(key), TokenKeySize)
	}
	k := &tokenKey{key: bytes.Clone(key)}
	k.macs.New = func() any { return &tokenMAC{h: hmac.New(sha256.New, k.key)} }
	return k, nil
}

// mac appends the MAC of payload and binding to dst.
func (m *tokenMAC) mac(dst, payload []byte, binding string) []byte {
	m.h.Reset()
	m.h.Write(payload)
	m.binding = append(m.binding[:0], binding...)
	m.h.Write(m.binding)
	return m.h.Sum(dst)
}

// issue returns a token for binding that expires at exp.
func (k *tokenKey) issue(exp time.Time, binding string) (string, error) {
	m := k.macs.Get().(*tokenMAC)
	defer k.macs.Put(m)
	raw := m.raw[:tokenPayloadLen]
	raw[0] = tokenVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(exp.UnixNano()))
	if _, err := rand.Read(raw[9:tokenPayloadLen]); err != nil {
		return "", fmt.Errorf("reading random nonce: %w", err)
	}
	return tokenEncoding.EncodeToString(m.mac(raw, raw, binding)), nil
}

// verify returns the expiry of tok and whether it is authentic for
// binding. It does not look at the clock.
func (k *tokenKey) verify(tok, binding string) (time.Time, bool) {
	if len(tok) != tokenLen {
		return time.Time{}, false
	}
	m := k.macs.Get().(*tokenMAC)
	defer k.macs.Put(m)
	n, err := tokenEncoding.Decode(m.raw[:], []byte(tok))
	if err != nil || n != tokenRawLen || m.raw[0] != tokenVersion {
		return time.Time{}, false
	}
	if !hmac.Equal(m.mac(m.sum[:0], m.raw[:tokenPayloadLen], binding), m.raw[tokenPayloadLen:]) {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(m.raw[1:9]))), true
}

// parseTokenTTL parses the X-aws-ec2-metadata-token-ttl-seconds value: ASCII
// digits only (no sign, no spaces), 1..21600.
func parseTokenTTL(s string) (int, bool) {
	if s == "" || len(s) > 10 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < MinTokenTTL || n > MaxTokenTTL {
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

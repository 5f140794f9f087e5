package credentials

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/internal/rafake"
	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

const (
	raTA      = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	raProfile = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"
	raRole    = "arn:aws:iam::123456789012:role/host-bootstrap"
)

// fixedRSAKey derives a 2048-bit RSA key from a fixed seed, so that the
// fixed vectors need no key committed to the repository. ProbablyPrime is
// deterministic, so the same primes come out on every run.
func fixedRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	r := rand.New(rand.NewChaCha8([32]byte{'i', 'm', 'd', 's', '-', 's', 'h', 'i', 'm'}))
	e := big.NewInt(65537)
	one := big.NewInt(1)
	prime := func() *big.Int {
		for {
			b := make([]byte, 128)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] |= 0xc0
			b[127] |= 1
			p := new(big.Int).SetBytes(b)
			pm1 := new(big.Int).Sub(p, one)
			if p.ProbablyPrime(20) && new(big.Int).GCD(nil, nil, e, pm1).Cmp(one) == 0 {
				return p
			}
		}
	}
	p, q := prime(), prime()
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537},
		D:         new(big.Int).ModInverse(e, phi),
		Primes:    []*big.Int{p, q},
	}
	k.Precompute()
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedECKey is a P-256 key with a fixed scalar.
func fixedECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("imds-shim fixed vector"))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedCert is a self-signed certificate for key, deterministic for RSA
// keys (PKCS#1 v1.5 signatures take no randomness).
func fixedCert(t *testing.T, key crypto.Signer, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x1234567890),
		Subject:      pkix.Name{CommonName: "fixed-vector.example"},
		NotBefore:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(bytes.NewReader(make([]byte, 1024)), tmpl, tmpl, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const fixedCanonical = `POST
/sessions
profileArn=arn%3Aaws%3Arolesanywhere%3Aeu-west-1%3A123456789012%3Aprofile%2F1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809&roleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fhost-bootstrap&trustAnchorArn=arn%3Aaws%3Arolesanywhere%3Aeu-west-1%3A123456789012%3Atrust-anchor%2F0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
content-type:application/json
host:rolesanywhere.eu-west-1.amazonaws.com
x-amz-date:20261128T120000Z
x-amz-x509:{X509}
{CHAIN}
{SIGNED}
1a15f67f6619aa540b13e9a4c37d149fb2c9bdea25d82b73a3878826694dfe27`

// The RSA signature of the vector without a chain. PKCS#1 v1.5 is
// deterministic, so any change in canonical request, string to sign,
// hashing or padding changes it. Cross-checked outside Go: the string to
// sign signed with the same key by `openssl dgst -sha256 -sign KEY` gives
// the same bytes.
const fixedRSASignature = "a4a9b05c354be0290bb9e37d073d7c4abacfb4cb8ca36762ccc5f18760bf2bf5c3dd5cc5c89ff187bcbf08b3f4561a5c1b4c62d9a58e9bec778db5dc580e84dc" +
	"b09f6cfc479d123d32be49db02c93dce1d4fa0fb98f06b3eb5360b6a9cbd8b548c8dfca98b20d80cc2a81d3d39f4a2d50e5d1b9755267cb12c7423001c424e4a" +
	"7e5be692cc1bf9a7841cd5a9b28347d17f3576d5d744c2d25612a263b5eb64dd3bbb115ea0480bc24ad3830f88f7e9a27a1157b12fbef916df6f0b70ad926c9c" +
	"dd18d07332015e42c07065b5ad8df0cfdd37f6f17d187bf56981ff714405121eadf89362c616e3d502ea9d75e2aad813535f63035582280ef0907fe2855b13e0"

// TestSignerFixedVectors checks the signer against the protocol written
// out by hand: fixed key, fixed time, fixed ARNs give exactly this
// canonical request, string to sign, Authorization header and, for RSA,
// signature; the ECDSA signature is verified instead (it is randomised).
func TestSignerFixedVectors(t *testing.T) {
	rsaKey := fixedRSAKey(t)
	ecKey := fixedECKey(t)
	rsaLeaf := fixedCert(t, rsaKey, rsaKey)
	ecLeaf := fixedCert(t, ecKey, rsaKey) // issued by the RSA key: deterministic
	inter := fixedCert(t, rsaKey, rsaKey)
	when := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ra, err := NewRolesAnywhere(RolesAnywhereConfig{
		CertificateFile: "/unused", PrivateKeyFile: "/unused",
		TrustAnchorARN: raTA, ProfileARN: raProfile, RoleARN: raRole,
	}, RolesAnywhereOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		id    raIdentity
		alg   string
		chain bool
	}{
		{"rsa", raIdentity{Leaf: rsaLeaf, Key: rsaKey}, "AWS4-X509-RSA-SHA256", false},
		{"rsa+chain", raIdentity{Leaf: rsaLeaf, Chain: []*x509.Certificate{inter, inter}, Key: rsaKey}, "AWS4-X509-RSA-SHA256", true},
		{"ecdsa", raIdentity{Leaf: ecLeaf, Key: ecKey}, "AWS4-X509-ECDSA-SHA256", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, s, err := ra.newRequest(t.Context(), tc.id, time.Hour, when, strings.NewReader(strings.Repeat("x", 4096)))
			if err != nil {
				t.Fatal(err)
			}
			wantCR := strings.ReplaceAll(fixedCanonical, "{X509}", base64.StdEncoding.EncodeToString(tc.id.Leaf.Raw))
			signed := "content-type;host;x-amz-date;x-amz-x509"
			chainLine := ""
			if tc.chain {
				b := base64.StdEncoding.EncodeToString(inter.Raw)
				chainLine = "x-amz-x509-chain:" + b + "," + b + "\n"
				signed += ";x-amz-x509-chain"
			}
			wantCR = strings.ReplaceAll(wantCR, "{CHAIN}\n", chainLine+"\n")
			wantCR = strings.ReplaceAll(wantCR, "{SIGNED}", signed)
			if s.CanonicalRequest != wantCR {
				t.Errorf("canonical request:\n%s\nwant:\n%s", s.CanonicalRequest, wantCR)
			}
			h := sha256.Sum256([]byte(wantCR))
			wantSTS := tc.alg + "\n20261128T120000Z\n20261128/eu-west-1/rolesanywhere/aws4_request\n" + hex.EncodeToString(h[:])
			if s.StringToSign != wantSTS {
				t.Errorf("string to sign:\n%s\nwant:\n%s", s.StringToSign, wantSTS)
			}
			wantAuth := tc.alg + " Credential=78187493520/20261128/eu-west-1/rolesanywhere/aws4_request, SignedHeaders=" + signed + ", Signature=" + s.Signature
			if got := req.Header.Get("Authorization"); got != wantAuth {
				t.Errorf("Authorization = %q\nwant %q", got, wantAuth)
			}
			if req.URL.String() != "https://rolesanywhere.eu-west-1.amazonaws.com/sessions?"+strings.Split(wantCR, "\n")[2] || req.Host != "rolesanywhere.eu-west-1.amazonaws.com" {
				t.Errorf("request goes to %s (Host %s)", req.URL, req.Host)
			}
			body, _ := io.ReadAll(req.Body)
			if string(body) != `{"durationSeconds":3600}` {
				t.Errorf("body = %s", body)
			}
			sig, _ := hex.DecodeString(s.Signature)
			d := sha256.Sum256([]byte(wantSTS))
			switch k := tc.id.Key.(type) {
			case *rsa.PrivateKey:
				if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, d[:], sig); err != nil {
					t.Errorf("RSA signature does not verify: %v", err)
				}
				if !tc.chain && s.Signature != fixedRSASignature {
					t.Errorf("RSA signature = %s, want the fixed vector %s", s.Signature, fixedRSASignature)
				}
			case *ecdsa.PrivateKey:
				if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
					t.Error("ECDSA signature does not verify")
				}
			}
		})
	}
}

// raEnv is a fake Roles Anywhere with a trust anchor CA, and a directory
// for the host's certificate and key.
type raEnv struct {
	ca       *rafake.Issued
	fake     *rafake.Server
	url      string
	certFile string
	keyFile  string
}

func newRAEnv(t *testing.T, now func() time.Time) *raEnv {
	t.Helper()
	ca, err := rafake.NewCA("test root", rafake.P256)
	if err != nil {
		t.Fatal(err)
	}
	e := &raEnv{ca: ca}
	e.fake, e.url = rafake.Start(t, rafake.Config{
		TrustAnchorARN: raTA, TrustAnchor: ca.Cert, ProfileARN: raProfile,
		RoleARNs: []string{raRole, testRole}, Now: now, Logf: t.Logf,
	})
	dir := t.TempDir()
	e.certFile, e.keyFile = filepath.Join(dir, "host.pem"), filepath.Join(dir, "host.key")
	return e
}

// install issues a leaf (through an intermediate when inter) and writes it.
func (e *raEnv) install(t *testing.T, o rafake.CertOptions, inter bool, format rafake.KeyFormat) *rafake.Issued {
	t.Helper()
	issuer, chain := e.ca, []*x509.Certificate(nil)
	if inter {
		i, err := e.ca.Issue(rafake.CertOptions{CommonName: "test intermediate", IsCA: true})
		if err != nil {
			t.Fatal(err)
		}
		issuer, chain = i, []*x509.Certificate{i.Cert}
	}
	if o.CommonName == "" {
		o.CommonName = "host-a.example"
	}
	leaf, err := issuer.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := rafake.WriteFiles(leaf, chain, format, e.certFile, e.keyFile); err != nil {
		t.Fatal(err)
	}
	return leaf
}

func (e *raEnv) source(t *testing.T, now func() time.Time, mut ...func(*RolesAnywhereConfig)) *RolesAnywhere {
	t.Helper()
	cfg := RolesAnywhereConfig{
		CertificateFile: e.certFile, PrivateKeyFile: e.keyFile,
		TrustAnchorARN: raTA, ProfileARN: raProfile, RoleARN: raRole, Endpoint: e.url,
	}
	for _, m := range mut {
		m(&cfg)
	}
	ra, err := NewRolesAnywhere(cfg, RolesAnywhereOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return ra
}

// TestCreateSessionAgainstFake: every supported key type and encoding,
// with and without an intermediate, is accepted by the verifying fake.
func TestCreateSessionAgainstFake(t *testing.T) {
	for _, kt := range []rafake.KeyType{rafake.RSA2048, rafake.P256} {
		formats := []rafake.KeyFormat{rafake.PKCS8, rafake.SEC1}
		if kt == rafake.RSA2048 {
			formats = []rafake.KeyFormat{rafake.PKCS1, rafake.PKCS8}
		}
		for _, f := range formats {
			for _, inter := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/intermediate=%v", kt, f, inter), func(t *testing.T) {
					e := newRAEnv(t, nil)
					leaf := e.install(t, rafake.CertOptions{KeyType: kt}, inter, f)
					ra := e.source(t, nil)
					c, err := ra.CreateSession(t.Context(), 2*time.Hour)
					if err != nil {
						t.Fatalf("CreateSession: %v (fake refused: %+v)", err, e.fake.Rejections())
					}
					ss := e.fake.Sessions()
					if len(ss) != 1 || ss[0].Serial != leaf.Cert.SerialNumber.String() || ss[0].Duration != 2*time.Hour ||
						ss[0].RoleARN != raRole || ss[0].AccessKeyID != c.AccessKeyID {
						t.Fatalf("fake sessions = %+v, want one for serial %s, 2h, %s", ss, leaf.Cert.SerialNumber, raRole)
					}
					if !c.Expires.Equal(ss[0].Expires) || c.SecretAccessKey == "" || c.SessionToken == "" || !strings.HasPrefix(c.AccessKeyID, "ASIA") {
						t.Errorf("credentials %v do not match the session %+v", c, ss[0])
					}
				})
			}
		}
	}
}

// send posts a signed request as built, after mut has changed it.
func send(t *testing.T, req *http.Request, body []byte) int {
	t.Helper()
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFakeRejects proves the fake verifies: each tampering is refused
// for its own reason, and the source classes the refusal.
func TestFakeRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		// prepare issues certificates and returns the identity to sign with.
		prepare func(t *testing.T, e *raEnv) raIdentity
		now     time.Duration // signing time offset
		region  string
		tamper  func(req *http.Request)
		body    string
	}{
		{name: "accepted untampered", reason: ""},
		{name: "tampered query", reason: rafake.ReasonSignature, tamper: func(r *http.Request) {
			q := r.URL.Query()
			q.Set("roleArn", testRole) // allowed, but not what was signed
			r.URL.RawQuery = q.Encode()
		}},
		{name: "tampered body", reason: rafake.ReasonSignature, body: `{"durationSeconds":43200}`},
		{name: "stale date", reason: rafake.ReasonDate, now: -6 * time.Minute},
		{name: "future date", reason: rafake.ReasonDate, now: 6 * time.Minute},
		{name: "wrong region", reason: rafake.ReasonScope, region: "us-east-1"},
		{name: "leaf from another CA", reason: rafake.ReasonUntrusted, prepare: func(t *testing.T, e *raEnv) raIdentity {
			other, err := rafake.NewCA("other root", rafake.P256)
			if err != nil {
				t.Fatal(err)
			}
			l, err := other.Issue(rafake.CertOptions{CommonName: "intruder"})
			if err != nil {
				t.Fatal(err)
			}
			return raIdentity{Leaf: l.Cert, Key: l.Key}
		}},
		{name: "CA certificate as the leaf", reason: rafake.ReasonLeafIsCA, prepare: func(t *testing.T, e *raEnv) raIdentity {
			i, err := e.ca.Issue(rafake.CertOptions{CommonName: "sub CA", IsCA: true,
				KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature})
			if err != nil {
				t.Fatal(err)
			}
			return raIdentity{Leaf: i.Cert, Key: i.Key}
		}},
		{name: "no digitalSignature", reason: rafake.ReasonKeyUsage, prepare: func(t *testing.T, e *raEnv) raIdentity {
			l, err := e.ca.Issue(rafake.CertOptions{KeyUsage: x509.KeyUsageKeyEncipherment})
			if err != nil {
				t.Fatal(err)
			}
			return raIdentity{Leaf: l.Cert, Key: l.Key}
		}},
		{name: "serial not the leaf's", reason: rafake.ReasonSerial, tamper: func(r *http.Request) {
			a := r.Header.Get("Authorization")
			i := strings.Index(a, "Credential=") + len("Credential=")
			r.Header.Set("Authorization", a[:i]+"1"+a[i:])
		}},
		{name: "algorithm not the key's", reason: rafake.ReasonAlgorithm, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "ECDSA", "RSA", 1))
		}},
		{name: "x-amz-x509 unsigned", reason: rafake.ReasonSignedHeaders, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-x509", "", 1))
		}},
		{name: "signed headers unsorted", reason: rafake.ReasonSignedHeaders, tamper: func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "content-type;host", "host;content-type", 1))
		}},
		{name: "signature of another key", reason: rafake.ReasonSignature, prepare: func(t *testing.T, e *raEnv) raIdentity {
			l, err := e.ca.Issue(rafake.CertOptions{})
			if err != nil {
				t.Fatal(err)
			}
			other, _ := rafake.GenerateKey(rafake.P256)
			return raIdentity{Leaf: l.Cert, Key: other}
		}},
		{name: "duration too long", reason: rafake.ReasonDuration, body: "*", tamper: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRAEnv(t, nil)
			var id raIdentity
			if tc.prepare != nil {
				id = tc.prepare(t, e)
			} else {
				l, err := e.ca.Issue(rafake.CertOptions{})
				if err != nil {
					t.Fatal(err)
				}
				id = raIdentity{Leaf: l.Cert, Key: l.Key}
			}
			ra := e.source(t, nil, func(c *RolesAnywhereConfig) { c.Region = tc.region })
			d := time.Hour
			if tc.body == "*" {
				d = 43201 * time.Second
			}
			req, _, err := ra.newRequest(t.Context(), id, d, time.Now().Add(tc.now), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(req.Body)
			if tc.body != "" && tc.body != "*" {
				b = []byte(tc.body)
			}
			if tc.tamper != nil {
				tc.tamper(req)
			}
			status := send(t, req, b)
			rej := e.fake.Rejections()
			if tc.reason == "" {
				if status != 201 || len(rej) != 0 || len(e.fake.Sessions()) != 1 {
					t.Fatalf("status %d, rejections %+v; want 201", status, rej)
				}
				return
			}
			if len(rej) != 1 || rej[0].Reason != tc.reason || rej[0].Status != status {
				t.Fatalf("status %d, rejections %+v; want one for %q", status, rej, tc.reason)
			}
		})
	}
}

// TestCreateSessionErrorClasses: what the refresher makes of each failure.
func TestCreateSessionErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *raEnv)
		mut   func(*RolesAnywhereConfig)
		class string
	}{
		{"server error", func(t *testing.T, e *raEnv) { e.fake.FailNext(1, 500, "InternalServerException") }, nil, ClassServer},
		{"throttled", func(t *testing.T, e *raEnv) { e.fake.FailNext(1, 429, "ThrottlingException") }, nil, ClassThrottling},
		{"unknown 503", func(t *testing.T, e *raEnv) { e.fake.FailNext(1, 503, "") }, nil, ClassServer},
		{"role not in profile", nil, func(c *RolesAnywhereConfig) {
			c.RoleARN = "arn:aws:iam::123456789012:role/other"
		}, ClassAccessDenied},
		{"unknown profile", nil, func(c *RolesAnywhereConfig) {
			c.ProfileARN = strings.Replace(raProfile, "1a2b", "ffff", 1)
		}, ClassInvalidRequest},
		{"untrusted certificate", func(t *testing.T, e *raEnv) {
			other, _ := rafake.NewCA("other", rafake.P256)
			l, _ := other.Issue(rafake.CertOptions{})
			if err := rafake.WriteFiles(l, nil, rafake.PKCS8, e.certFile, e.keyFile); err != nil {
				t.Fatal(err)
			}
		}, nil, ClassAccessDenied},
		{"expired certificate", func(t *testing.T, e *raEnv) {
			e.install(t, rafake.CertOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Minute)}, false, rafake.PKCS8)
		}, nil, ClassCertificate},
		{"key does not match", func(t *testing.T, e *raEnv) {
			other, _ := rafake.GenerateKey(rafake.P256)
			pemKey, _ := rafake.KeyPEM(other, rafake.SEC1)
			if err := os.WriteFile(e.keyFile, pemKey, 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil, ClassCertificate},
		{"key file missing", func(t *testing.T, e *raEnv) { os.Remove(e.keyFile) }, nil, ClassCertificate},
		{"certificate file garbage", func(t *testing.T, e *raEnv) {
			if err := os.WriteFile(e.certFile, []byte("not a certificate\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, nil, ClassCertificate},
		{"connection refused", nil, func(c *RolesAnywhereConfig) { c.Endpoint = "http://127.0.0.1:1" }, ClassNetwork},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRAEnv(t, nil)
			e.install(t, rafake.CertOptions{}, false, rafake.PKCS8)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			var muts []func(*RolesAnywhereConfig)
			if tc.mut != nil {
				muts = append(muts, tc.mut)
			}
			ra := e.source(t, nil, muts...)
			c, err := ra.CreateSession(t.Context(), time.Hour)
			if err == nil {
				t.Fatalf("CreateSession succeeded: %v", c)
			}
			if got := classify(err); got != tc.class {
				t.Errorf("class of %q = %s, want %s", err, got, tc.class)
			}
			var api smithy.APIError
			if isAPI := errors.As(err, &api); isAPI != (tc.class != ClassCertificate && tc.class != ClassNetwork) {
				t.Errorf("%q is an API error: %v", err, isAPI)
			} else if isAPI && (api.ErrorCode() == "" || strings.Contains(api.ErrorCode(), ":")) {
				t.Errorf("API error code %q", api.ErrorCode())
			}
			if c != (Credentials{}) {
				t.Errorf("credentials returned with an error: %v", c)
			}
		})
	}
}

// TestKeyNeverInErrors: whatever is wrong with the key file, no part of it
// reaches an error, a check result or a log.
func TestKeyNeverInErrors(t *testing.T) {
	e := newRAEnv(t, nil)
	leaf := e.install(t, rafake.CertOptions{KeyType: rafake.RSA2048}, false, rafake.PKCS1)
	good, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(good)
	corrupt := slices.Clone(b.Bytes)
	corrupt[len(corrupt)/2] ^= 0xff
	corrupt = corrupt[:len(corrupt)-40]
	other, _ := rafake.GenerateKey(rafake.RSA2048)
	otherPEM, _ := rafake.KeyPEM(other, rafake.PKCS8)
	variants := map[string][]byte{
		"truncated":            pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: corrupt}),
		"wrong block type":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b.Bytes}),
		"pkcs8 label on pkcs1": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b.Bytes}),
		"not pem":              []byte(base64.StdEncoding.EncodeToString(b.Bytes)),
		"encrypted":            pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: b.Bytes}),
		"other key":            otherPEM,
	}
	for name, content := range variants {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(e.keyFile, content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err1 := e.source(t, nil).CreateSession(t.Context(), time.Hour)
			rep, err2 := CheckRolesAnywhere(RolesAnywhereConfig{CertificateFile: e.certFile, PrivateKeyFile: e.keyFile}, time.Now())
			if err1 == nil || err2 == nil {
				t.Fatalf("errors = %v, %v; want both to fail", err1, err2)
			}
			if classify(err1) != ClassCertificate {
				t.Errorf("class %s, want certificate", classify(err1))
			}
			for _, s := range []string{err1.Error(), err2.Error(), fmt.Sprintf("%+v", rep)} {
				if leaks(s, good, content, otherPEM) {
					t.Errorf("key material in %q", s)
				}
			}
		})
	}
	_ = leaf
}

// leaks reports whether s contains a PEM key marker, or any 12-character
// run of a key file's text or of the hex or base64 of the DER in its PEM
// blocks.
func leaks(s string, files ...[]byte) bool {
	if strings.Contains(s, "PRIVATE KEY-----") {
		return true
	}
	var blobs []string
	for _, f := range files {
		blobs = append(blobs, string(f))
		for rest := f; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			blobs = append(blobs, hex.EncodeToString(b.Bytes), base64.StdEncoding.EncodeToString(b.Bytes))
		}
	}
	for _, blob := range blobs {
		for _, line := range strings.Split(blob, "\n") {
			if strings.HasPrefix(line, "-----") {
				continue
			}
			for i := 0; i+12 <= len(line); i++ {
				if strings.Contains(s, line[i:i+12]) {
					return true
				}
			}
		}
	}
	return false
}

// TestRotation: a certificate replaced on disk is used at the next call,
// without a new source.
func TestRotation(t *testing.T) {
	e := newRAEnv(t, nil)
	first := e.install(t, rafake.CertOptions{KeyType: rafake.RSA2048}, false, rafake.PKCS1)
	ra := e.source(t, nil)
	if _, err := ra.CreateSession(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	second := e.install(t, rafake.CertOptions{KeyType: rafake.P256}, true, rafake.SEC1)
	if _, err := ra.CreateSession(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	ss := e.fake.Sessions()
	if len(ss) != 2 || ss[0].Serial != first.Cert.SerialNumber.String() || ss[1].Serial != second.Cert.SerialNumber.String() {
		t.Fatalf("sessions %+v; want serial %s then %s", ss, first.Cert.SerialNumber, second.Cert.SerialNumber)
	}
}

// TestExpiredCertificateKeepsLastGood runs the Refresher on the fake clock
// with the direct source: the certificate expires after the first fetch,
// every refresh then fails as ClassCertificate, the first set is served
// until its margin, then ErrNoCredentials — never an empty set. A renewed
// certificate is picked up at the next retry.
func TestExpiredCertificateKeepsLastGood(t *testing.T) {
	isolateAWSEnv(t)
	clock := newFakeClock()
	e := newRAEnv(t, clock.Now)
	e.install(t, rafake.CertOptions{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(5 * time.Minute)}, false, rafake.PKCS8)
	ra := e.source(t, clock.Now)
	cfg := Config{RoleARN: raRole, SessionName: "host-a"}
	client, err := NewRolesAnywhereSTSClient(t.Context(), cfg, ra)
	if err != nil {
		t.Fatal(err)
	}
	obs := &recObserver{}
	r, err := New(cfg, client, Options{Clock: clock, Rand: rand.NewPCG(1, 2), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{clock: clock, obs: obs, r: r}
	if err := r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	first, err := r.Current()
	if err != nil || !first.Expires.Equal(t0.Add(time.Hour)) || first.RoleARN != raRole {
		t.Fatalf("first set %v, %v", first, err)
	}
	stop := h.run(t)
	defer stop()
	serveUntil := t0.Add(time.Hour - ServeMargin)
	for h.clock.Now().Before(t0.Add(90 * time.Minute)) {
		now := h.next(t)
		c, err := r.Current()
		switch {
		case now.Before(serveUntil) && (err != nil || c != first):
			t.Fatalf("at %s: Current = %v, %v; want the first set", now, c, err)
		case !now.Before(serveUntil) && (!errors.Is(err, ErrNoCredentials) || c != (Credentials{})):
			t.Fatalf("at %s: Current = %v, %v; want ErrNoCredentials and nothing else", now, c, err)
		}
	}
	st := r.State()
	if st.LastErrorClass != ClassCertificate || st.ConsecutiveFailures < 2 || !strings.Contains(st.LastError, "expired") {
		t.Fatalf("State = %+v; want repeated certificate failures", st)
	}
	// Renewal on disk: the next retry serves again.
	e.install(t, rafake.CertOptions{NotBefore: t0, NotAfter: t0.Add(48 * time.Hour)}, false, rafake.PKCS8)
	h.until(t, func() bool { _, err := r.Current(); return err == nil })
	if c, _ := r.Current(); c.AccessKeyID == first.AccessKeyID || c.Expires.Sub(h.clock.Now()) > time.Hour {
		t.Errorf("after renewal Current = %v", c)
	}
}

// TestMotoChainedFromRolesAnywhere: a served role other than
// roles_anywhere.role_arn is assumed in moto's STS with the Roles Anywhere
// session as source credentials (one CreateSession shared by every chained
// refresh), and roles_anywhere.role_arn itself is served from CreateSession
// without touching STS.
func TestMotoChainedFromRolesAnywhere(t *testing.T) {
	base := motoURL(t)
	isolateAWSEnv(t)
	proxy := newRecordingProxy(t, base)
	e := newRAEnv(t, nil)
	e.install(t, rafake.CertOptions{KeyType: rafake.RSA2048}, true, rafake.PKCS8)
	ra := e.source(t, nil)

	chained := Config{RoleARN: testRole, SessionName: "it-ra", Duration: 15 * time.Minute, STSEndpoint: proxy.URL}
	direct := Config{RoleARN: raRole, SessionName: "it-ra", Duration: 3 * time.Hour, STSEndpoint: proxy.URL}
	var got []Credentials
	for _, cfg := range []Config{chained, chained, direct} {
		client, err := NewRolesAnywhereSTSClient(t.Context(), cfg, ra)
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(cfg, client, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Fetch(t.Context()); err != nil {
			t.Fatalf("%s: %v", cfg.RoleARN, err)
		}
		c, _ := r.Current()
		got = append(got, c)
	}
	ss := e.fake.Sessions()
	if len(ss) != 2 || ss[0].Duration != time.Hour || ss[1].Duration != 3*time.Hour || ss[1].AccessKeyID != got[2].AccessKeyID {
		t.Fatalf("CreateSession calls %+v; want one 1h source session shared by both chained fetches, then one 3h direct session", ss)
	}
	want := []seen{
		{Action: "AssumeRole", AccessKeyID: ss[0].AccessKeyID, SessionToken: true, DurationSeconds: "900"},
		{Action: "AssumeRole", AccessKeyID: ss[0].AccessKeyID, SessionToken: true, DurationSeconds: "900"},
	}
	if diff := cmp.Diff(want, proxy.seen()); diff != "" {
		t.Errorf("STS requests (-want +got):\n%s", diff)
	}
	if got[0].RoleARN != testRole || got[0].AccessKeyID == ss[0].AccessKeyID || got[2].RoleARN != raRole {
		t.Errorf("served %v and %v", got[0], got[2])
	}
	stsc := sts.New(sts.Options{Region: "eu-west-1", BaseEndpoint: aws.String(base),
		Credentials: awscreds.NewStaticCredentialsProvider(got[0].AccessKeyID, got[0].SecretAccessKey, got[0].SessionToken)})
	id, err := stsc.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if a := aws.ToString(id.Arn); a != "arn:aws:sts::123456789012:assumed-role/test-role/it-ra" {
		t.Errorf("caller identity %s", a)
	}
}

// TestChainedCertificateErrorClass: when the source session cannot be
// renewed because the certificate expired, the chained refresh fails as
// ClassCertificate through the SDK's signing layers, and STS is not called.
func TestChainedCertificateErrorClass(t *testing.T) {
	isolateAWSEnv(t)
	e := newRAEnv(t, nil)
	e.install(t, rafake.CertOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Second)}, false, rafake.SEC1)
	var stsCalls int
	stsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { stsCalls++; w.WriteHeader(500) }))
	defer stsSrv.Close()
	cfg := Config{RoleARN: testRole, SessionName: "it-ra", STSEndpoint: stsSrv.URL}
	client, err := NewRolesAnywhereSTSClient(t.Context(), cfg, e.source(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, client, Options{FetchAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Fetch(t.Context())
	if err == nil || classify(err) != ClassCertificate || !strings.Contains(err.Error(), "expired") || stsCalls != 0 {
		t.Fatalf("Fetch = %v (class %s), %d STS calls; want a certificate error and no STS call", err, classify(err), stsCalls)
	}
}

// TestDirectRoleRefusesUnsupportedParameters: CreateSession takes no
// session policy, tags or external ID; asking for them fails loudly.
func TestDirectRoleRefusesUnsupportedParameters(t *testing.T) {
	e := newRAEnv(t, nil)
	e.install(t, rafake.CertOptions{}, false, rafake.PKCS8)
	cfg := Config{RoleARN: raRole, SessionName: "x1", Policy: `{"Version":"2012-10-17","Statement":[]}`}
	client, err := NewRolesAnywhereSTSClient(t.Context(), cfg, e.source(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(cfg, client, Options{FetchAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Fetch(t.Context()); classify(err) != ClassInvalidRequest || len(e.fake.Sessions()) != 0 {
		t.Fatalf("Fetch = %v (%s), sessions %v", err, classify(err), e.fake.Sessions())
	}
	// pkg/config refuses this configuration by key (roles_anywhere
	// rules in validate.go); the engine refuses it too if built by hand.
}

// TestNewRolesAnywhereInvariants: the engine checks only what it relies
// on (the file is validated by key in pkg/config), and derives the region
// and endpoint from the trust anchor with the one partition table.
func TestNewRolesAnywhereInvariants(t *testing.T) {
	good := RolesAnywhereConfig{
		CertificateFile: "/etc/imds-shim/host.pem", PrivateKeyFile: "/etc/imds-shim/host.key",
		TrustAnchorARN: raTA, ProfileARN: raProfile, RoleARN: raRole,
	}
	ra, err := NewRolesAnywhere(good, RolesAnywhereOptions{})
	if err != nil || ra.Endpoint() != "https://rolesanywhere.eu-west-1.amazonaws.com" || ra.Region() != "eu-west-1" {
		t.Fatalf("endpoint %q region %q, %v", ra.Endpoint(), ra.Region(), err)
	}
	cn := good
	cn.TrustAnchorARN = strings.Replace(strings.Replace(raTA, ":aws:", ":aws-cn:", 1), "eu-west-1", "cn-north-1", 1)
	if ra, err := NewRolesAnywhere(cn, RolesAnywhereOptions{}); err != nil || ra.Endpoint() != "https://rolesanywhere.cn-north-1.amazonaws.com.cn" {
		t.Errorf("aws-cn trust anchor: %v, %v", ra, err)
	}
	bad := RolesAnywhereConfig{
		TrustAnchorARN: strings.Replace(raTA, "trust-anchor", "profile", 1),
		ProfileARN:     "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/x",
		RoleARN:        "arn:aws:iam::123456789012:user/bob",
		Region:         "moon-1",
		Duration:       13 * time.Hour,
	}
	_, err = NewRolesAnywhere(bad, RolesAnywhereOptions{})
	for _, want := range []string{"certificate and private key", "trust anchor ARN:", "profile ARN:", "role ARN:", "region:", "duration:"} {
		if !strings.Contains(fmt.Sprint(err), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(fmt.Sprint(err), "roles_anywhere.") {
		t.Errorf("the engine names YAML keys, which only pkg/config does: %v", err)
	}
}

// TestCheckRolesAnywhere: what `imds-shim check` learns from the files.
func TestCheckRolesAnywhere(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name     string
		opts     rafake.CertOptions
		inter    bool
		mangle   func(t *testing.T, e *raEnv, leaf *rafake.Issued)
		problems []string // substrings, one per expected problem
		warn     bool
	}{
		{name: "good with intermediate", inter: true},
		{name: "good RSA", opts: rafake.CertOptions{KeyType: rafake.RSA2048}},
		{name: "expires in 3 days", opts: rafake.CertOptions{NotAfter: now.Add(72 * time.Hour)}, warn: true},
		{name: "key readable by group", mangle: func(t *testing.T, e *raEnv, _ *rafake.Issued) {
			if err := os.Chmod(e.keyFile, 0o640); err != nil {
				t.Fatal(err)
			}
		}, warn: true},
		{name: "expired", opts: rafake.CertOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, problems: []string{"expired at"}},
		{name: "CA as leaf", opts: rafake.CertOptions{IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, problems: []string{"is a CA certificate"}},
		{name: "no digitalSignature", opts: rafake.CertOptions{KeyUsage: x509.KeyUsageKeyEncipherment}, problems: []string{"digitalSignature"}},
		{name: "key mismatch and CA leaf at once", opts: rafake.CertOptions{IsCA: true}, mangle: func(t *testing.T, e *raEnv, _ *rafake.Issued) {
			k, _ := rafake.GenerateKey(rafake.P256)
			b, _ := rafake.KeyPEM(k, rafake.PKCS8)
			os.WriteFile(e.keyFile, b, 0o600)
		}, problems: []string{"does not belong", "is a CA certificate", "digitalSignature"}},
		{name: "chain in wrong order", inter: true, mangle: func(t *testing.T, e *raEnv, leaf *rafake.Issued) {
			// root where the intermediate should be.
			os.WriteFile(e.certFile, rafake.CertsPEM(leaf.Cert, e.ca.Cert), 0o644)
		}, problems: []string{"did not issue"}},
		{name: "leaf after its issuer", inter: true, mangle: func(t *testing.T, e *raEnv, leaf *rafake.Issued) {
			b, _ := os.ReadFile(e.certFile)
			var blocks [][]byte
			for {
				var p *pem.Block
				p, b = pem.Decode(b)
				if p == nil {
					break
				}
				blocks = append(blocks, pem.EncodeToMemory(p))
			}
			os.WriteFile(e.certFile, append(blocks[1], blocks[0]...), 0o644)
		}, problems: []string{"does not belong", "is a CA certificate", "digitalSignature", "not a CA certificate", "did not issue"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRAEnv(t, nil)
			leaf := e.install(t, tc.opts, tc.inter, rafake.PKCS8)
			if tc.mangle != nil {
				tc.mangle(t, e, leaf)
			}
			rep, err := CheckRolesAnywhere(RolesAnywhereConfig{CertificateFile: e.certFile, PrivateKeyFile: e.keyFile}, now)
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if len(got) != len(tc.problems) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tc.problems), tc.problems)
			}
			for i, p := range tc.problems {
				if !strings.Contains(got[i], p) {
					t.Errorf("problem %d = %q, want it to mention %q", i, got[i], p)
				}
			}
			if (len(rep.Warnings) > 0) != tc.warn {
				t.Errorf("warnings %q, want warning=%v", rep.Warnings, tc.warn)
			}
			if tc.mangle == nil {
				if rep.Serial != leaf.Cert.SerialNumber.String() || rep.Subject != leaf.Cert.Subject.String() || !rep.NotAfter.Equal(leaf.Cert.NotAfter) {
					t.Errorf("report %+v does not describe the leaf", rep)
				}
				if got, want := rep.ExpirySeconds(now), leaf.Cert.NotAfter.Sub(now).Seconds(); got != want {
					t.Errorf("ExpirySeconds = %v, want %v", got, want)
				}
				if tc.inter != (rep.Intermediates == 1) {
					t.Errorf("Intermediates = %d", rep.Intermediates)
				}
			}
		})
	}
}

// TestCertificateStatusAndExpiryWarning: the daemon's view of the
// certificate (status, gauge) follows the file, and signing with a
// certificate that expires within 7 days logs a warning.
func TestCertificateStatusAndExpiryWarning(t *testing.T) {
	e := newRAEnv(t, nil)
	now := time.Now()
	soon := e.install(t, rafake.CertOptions{NotAfter: now.Add(72 * time.Hour)}, false, rafake.SEC1)
	logs := &syncbuf.Buffer{}
	ra, err := NewRolesAnywhere(RolesAnywhereConfig{
		CertificateFile: e.certFile, PrivateKeyFile: e.keyFile,
		TrustAnchorARN: raTA, ProfileARN: raProfile, RoleARN: raRole, Endpoint: e.url,
	}, RolesAnywhereOptions{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ra.CreateSession(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	rep, err := ra.CertificateStatus(now)
	if err != nil || len(rep.Warnings) != 1 || rep.Serial != soon.Cert.SerialNumber.String() ||
		rep.ExpirySeconds(now) != soon.Cert.NotAfter.Sub(now).Seconds() {
		t.Fatalf("status %+v, %v", rep, err)
	}
	key, _ := os.ReadFile(e.keyFile)
	if n := strings.Count(logs.String(), "expires soon"); n != 1 || leaks(logs.String(), key) {
		t.Fatalf("log (want one warning, no key):\n%s", logs.String())
	}
	later := e.install(t, rafake.CertOptions{NotAfter: now.Add(60 * 24 * time.Hour)}, false, rafake.SEC1)
	if _, err := ra.CreateSession(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	rep, err = ra.CertificateStatus(now)
	if err != nil || len(rep.Warnings) != 0 || rep.Serial != later.Cert.SerialNumber.String() {
		t.Fatalf("status after renewal %+v, %v", rep, err)
	}
	if n := strings.Count(logs.String(), "expires soon"); n != 1 {
		t.Errorf("%d warnings after renewal, want still 1", n)
	}
}

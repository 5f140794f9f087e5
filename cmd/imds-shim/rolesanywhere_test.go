package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

const (
	raTestTA      = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	raTestProfile = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809"
	raTestBoot    = "arn:aws:iam::123456789012:role/host-bootstrap"
	raTestWeb     = "arn:aws:iam::123456789012:role/web"
)

// testCert is a certificate and its key. cmd cannot import
// pkg/internal/rafake, so this test writes its own throwaway PKI; the
// CreateSession round trip is the daemon test's (rafake + moto).
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCert(t *testing.T, parent *testCert, cn string, isCA bool, notBefore, notAfter time.Time) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: isCA,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{c, key}
}

// raFixture is a CA with an intermediate and a configuration file whose
// roles_anywhere block points at the fixture's certificate and key.
type raFixture struct {
	dir, cfg, cert, key string
	ca, inter           *testCert
	url                 string
}

func newRAFixture(t *testing.T) *raFixture {
	t.Helper()
	f := &raFixture{dir: t.TempDir(), url: "http://127.0.0.1:9"}
	now := time.Now()
	f.ca = newTestCert(t, nil, "Example Fleet Root CA", true, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	f.inter = newTestCert(t, f.ca, "Example Fleet Issuing CA", true, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	f.cert, f.key, f.cfg = filepath.Join(f.dir, "host.pem"), filepath.Join(f.dir, "host.key"), filepath.Join(f.dir, "c.yaml")
	f.writeConfig(t, "")
	return f
}

func (f *raFixture) writeConfig(t *testing.T, extra string) {
	t.Helper()
	y := "role_arn: " + raTestBoot + `
network: {manage: false}
imds: {listen: '127.0.0.1:254'}
metrics: {listen: ''}
roles:
  - {role_arn: '` + raTestWeb + `', users: [www-data]}
roles_anywhere:
  certificate: ` + f.cert + `
  private_key: ` + f.key + `
  trust_anchor_arn: ` + raTestTA + `
  profile_arn: ` + raTestProfile + `
  role_arn: ` + raTestBoot + `
  endpoint: ` + f.url + `
` + extra
	if err := os.WriteFile(f.cfg, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a new leaf (through the intermediate) to the fixture's
// files: the leaf then the intermediate, the key in PKCS#8 at 0600.
func (f *raFixture) issue(t *testing.T, notBefore, notAfter time.Time) *testCert {
	t.Helper()
	leaf := newTestCert(t, f.inter, "host-a.fleet.example", false, notBefore, notAfter)
	pemCerts := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.inter.cert.Raw})...)
	der, err := x509.MarshalPKCS8PrivateKey(leaf.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.cert, pemCerts, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// keyLeaks reports whether out holds any line of the key's PEM body.
func keyLeaks(t *testing.T, out, keyFile string) bool {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("key file is not PEM")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if len(l) > 16 && !strings.HasPrefix(l, "-----") && strings.Contains(out, l) {
			return true
		}
	}
	return false
}

// TestCheckRolesAnywhere: check prints the certificate (subject, serial,
// issuer chain, expiry), warns 7 days before expiry, says which served role
// is chained and which is served directly, and never prints the private
// key.
func TestCheckRolesAnywhere(t *testing.T) {
	f := newRAFixture(t)
	leaf := f.issue(t, time.Now().Add(-time.Hour), time.Now().Add(72*time.Hour))
	var out, errb bytes.Buffer
	if code := run([]string{"check", "-c", f.cfg, "--no-sts"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, &out, &errb)
	}
	for _, want := range []string{
		"cert:      " + f.cert,
		"           subject  CN=host-a.fleet.example",
		"           serial   " + leaf.cert.SerialNumber.String(),
		"           issuer   CN=Example Fleet Issuing CA",
		"           chain[0] CN=Example Fleet Issuing CA",
		"           key      ECDSA-P-256 (AWS4-X509-ECDSA-SHA256) in " + f.key,
		"(expires in 2d 23h)",
		"warning:   roles_anywhere: certificate expires at",
		"served:    role_arn " + raTestBoot + ": directly from CreateSession (up to 12h)",
		"           roles[0] " + raTestWeb + ": chained from the Roles Anywhere session; AWS caps role chaining at 1h",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, &out)
		}
	}
	if keyLeaks(t, out.String()+errb.String(), f.key) {
		t.Errorf("check printed the private key:\n%s%s", &out, &errb)
	}

	// An expired certificate: serve could not start, so check fails the
	// same way, naming the problem, still without the key.
	f.issue(t, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-c", f.cfg, "--no-sts"}, &out, &errb); code != daemon.ExitCredentials {
		t.Fatalf("expired certificate: exit %d, want %d\n%s%s", code, daemon.ExitCredentials, &out, &errb)
	}
	if !strings.Contains(errb.String(), "roles_anywhere: certificate expired at") || keyLeaks(t, out.String()+errb.String(), f.key) {
		t.Errorf("expired certificate:\n%s%s", &out, &errb)
	}
}

// TestCertificateExpiryGauge: imds_shim_certificate_expiry_seconds follows
// the file at each scrape and exists only while roles_anywhere is set.
func TestCertificateExpiryGauge(t *testing.T) {
	f := newRAFixture(t)
	first := f.issue(t, time.Now().Add(-time.Hour), time.Now().Add(10*24*time.Hour))
	c, err := loadConfig(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var src rolesAnywhereSource
	reg := prometheus.NewRegistry()
	src.attach(slog.New(slog.DiscardHandler), reg)
	if n := testutil.CollectAndCount(reg, "imds_shim_certificate_expiry_seconds"); n != 0 {
		t.Fatalf("%d series before roles_anywhere is in use", n)
	}
	rc, _ := rolesAnywhereConfig(c)
	if _, err := src.get(rc); err != nil {
		t.Fatal(err)
	}
	near := func(got float64, want time.Time) bool {
		d := time.Until(want).Seconds() - got
		return d >= -1 && d <= 5
	}
	if v := testutil.ToFloat64(&src); !near(v, first.cert.NotAfter) {
		t.Errorf("gauge %v, want about %v", v, time.Until(first.cert.NotAfter).Seconds())
	}
	second := f.issue(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	if v := testutil.ToFloat64(&src); !near(v, second.cert.NotAfter) {
		t.Errorf("after rotation gauge %v, want about %v", v, time.Until(second.cert.NotAfter).Seconds())
	}
	src.forget()
	if n := testutil.CollectAndCount(reg, "imds_shim_certificate_expiry_seconds"); n != 0 {
		t.Errorf("%d series after roles_anywhere was removed", n)
	}
}

// TestRolesAnywhereReloadComponents: a changed roles_anywhere block is a
// change of the credentials component (reload rebuilds the engines); a
// certificate renewed in place is not (the engine re-reads it at every
// refresh, so reload need not notice it).
func TestRolesAnywhereReloadComponents(t *testing.T) {
	f := newRAFixture(t)
	f.issue(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	load := func() any {
		c, err := loadConfig(f.cfg)
		if err != nil {
			t.Fatal(err)
		}
		return components(c).Credentials
	}
	a := load()
	f.issue(t, time.Now().Add(-time.Hour), time.Now().Add(30*24*time.Hour))
	if b := load(); !reflect.DeepEqual(a, b) {
		t.Errorf("a renewed certificate changes the credentials component:\n%v\n%v", a, b)
	}
	f.writeConfig(t, "  duration: 2h\n")
	if b := load(); reflect.DeepEqual(a, b) {
		t.Errorf("roles_anywhere.duration changed but the credentials component did not")
	}
}

// TestSharedRolesAnywhereSource: one source per configuration, shared by
// every served role's client, replaced when the block changes.
func TestSharedRolesAnywhereSource(t *testing.T) {
	f := newRAFixture(t)
	c, err := loadConfig(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var src rolesAnywhereSource
	rc, _ := rolesAnywhereConfig(c)
	a, err1 := src.get(rc)
	b, err2 := src.get(rc)
	rc.Duration = 2 * time.Hour
	d, err3 := src.get(rc)
	if err1 != nil || err2 != nil || err3 != nil || a != b || a == d || src.current() != d {
		t.Errorf("get: %p %p %p, %v %v %v", a, b, d, err1, err2, err3)
	}
	if a.Region() != "eu-west-1" || a.Endpoint() != f.url {
		t.Errorf("region %s endpoint %s", a.Region(), a.Endpoint())
	}
}

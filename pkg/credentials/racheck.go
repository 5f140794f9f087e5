package credentials

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// CertificateWarnBefore is how long before its expiry `imds-shim check`
// and the daemon start warning about the Roles Anywhere certificate.
const CertificateWarnBefore = 7 * 24 * time.Hour

// CertificateReport describes the Roles Anywhere certificate for `imds-shim
// check` and status. It holds no key material.
type CertificateReport struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"` // decimal, as in the Authorization header
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// KeyType is "RSA-2048", "ECDSA-P256", …; Algorithm the signing
	// algorithm used for CreateSession.
	KeyType   string `json:"key_type"`
	Algorithm string `json:"algorithm"`
	// Intermediates counts the certificates after the leaf; Chain is
	// their subjects, in file order (the leaf's issuer first).
	Intermediates int      `json:"intermediates"`
	Chain         []string `json:"chain,omitempty"`
	// Warnings are problems that do not stop the source working now, such
	// as an expiry within CertificateWarnBefore.
	Warnings []string `json:"warnings,omitempty"`
}

// ExpirySeconds is the value of imds_shim_certificate_expiry_seconds: the
// seconds from now until the certificate expires, negative once expired.
func (r CertificateReport) ExpirySeconds(now time.Time) float64 {
	return r.NotAfter.Sub(now).Seconds()
}

// CheckRolesAnywhere reads and checks the certificate and key as
// `imds-shim check` should: both files parse, the key belongs to the leaf,
// the leaf is valid now, is not a CA and allows digitalSignature, and each
// certificate in the file is signed by the next one, which must be a CA.
// The trust anchor itself is in AWS and cannot be checked locally. The
// report is filled as far as the files could be read, even on error, and
// every problem found is returned at once.
func CheckRolesAnywhere(cfg RolesAnywhereConfig, now time.Time) (CertificateReport, error) {
	var rep CertificateReport
	leaf, chain, err := loadCertificates(cfg.CertificateFile)
	if err != nil {
		return rep, err
	}
	rep = describeCertificate(leaf, chain)
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, certErrorf(format, args...)) }
	key, kerr := loadPrivateKey(cfg.PrivateKeyFile)
	if kerr != nil {
		errs = append(errs, kerr)
	}
	switch {
	case now.After(leaf.NotAfter):
		bad("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		bad("certificate is not valid before %s (is the clock right?)", leaf.NotBefore.UTC().Format(time.RFC3339))
	default:
		rep.Warnings = append(rep.Warnings, expiryWarnings(leaf, now)...)
	}
	if key != nil {
		if err := keyMatches(leaf, key); err != nil {
			errs = append(errs, err)
		}
	}
	if fi, err := os.Stat(cfg.PrivateKeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("private key %s is accessible to group or others (mode %04o); make it 0600 or 0400, owned by root",
			cfg.PrivateKeyFile, fi.Mode().Perm()))
	}
	switch leaf.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		bad("certificate key is %s; Roles Anywhere accepts RSA and ECDSA", leaf.PublicKeyAlgorithm)
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		bad("certificate %q is a CA certificate; Roles Anywhere needs an end-entity (leaf) certificate first in the file", leaf.Subject.String())
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		bad("certificate %q does not allow digitalSignature in its key usage, which Roles Anywhere requires", leaf.Subject.String())
	}
	prev := leaf
	for i, c := range chain {
		if !c.BasicConstraintsValid || !c.IsCA {
			bad("certificate %d in the file (%q) is not a CA certificate; after the leaf come only its intermediates", i+2, c.Subject.String())
		}
		if err := prev.CheckSignatureFrom(c); err != nil {
			bad("certificate %d in the file (%q) did not issue the one before it (%q): %v", i+2, c.Subject.String(), prev.Subject.String(), err)
		}
		if now.After(c.NotAfter) {
			bad("intermediate %q expired at %s", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
		}
		prev = c
	}
	return rep, errors.Join(errs...)
}

// expiryWarnings warns from CertificateWarnBefore before the expiry on.
func expiryWarnings(leaf *x509.Certificate, now time.Time) []string {
	left := leaf.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return []string{fmt.Sprintf("certificate expired at %s: renew it (imds-shim re-reads it at every refresh)",
			leaf.NotAfter.UTC().Format(time.RFC3339))}
	case left < CertificateWarnBefore:
		return []string{fmt.Sprintf("certificate expires at %s, in %s: renew it (imds-shim re-reads it at every refresh)",
			leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Minute))}
	}
	return nil
}

func describeCertificate(leaf *x509.Certificate, chain []*x509.Certificate) CertificateReport {
	rep := CertificateReport{
		Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), Serial: leaf.SerialNumber.String(),
		NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Intermediates: len(chain),
	}
	for _, c := range chain {
		rep.Chain = append(rep.Chain, c.Subject.String())
	}
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		rep.KeyType, rep.Algorithm = fmt.Sprintf("RSA-%d", k.N.BitLen()), raAlgRSA
	case *ecdsa.PublicKey:
		rep.KeyType, rep.Algorithm = "ECDSA-"+k.Curve.Params().Name, raAlgECDSA
	default:
		rep.KeyType = leaf.PublicKeyAlgorithm.String()
	}
	return rep
}

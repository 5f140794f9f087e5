package credentials

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// IAM Roles Anywhere CreateSession signing: SigV4's canonical request and
// string to sign, with the HMAC chain replaced by a signature of the string
// to sign with the certificate's private key, and the access key ID
// replaced by the certificate's serial number.
const (
	raService       = "rolesanywhere"
	raAlgRSA        = "AWS4-X509-RSA-SHA256"
	raAlgECDSA      = "AWS4-X509-ECDSA-SHA256"
	raPath          = "/sessions"
	amzDateFormat   = "20060102T150405Z"
	amzDayFormat    = "20060102"
	maxPEMFileBytes = 1 << 20
)

// raIdentity is what one CreateSession request is signed with: the leaf
// certificate, the intermediates sent with it, and a signer for the leaf's
// key. Key is a crypto.Signer so that a PKCS#11 or TPM key can take the
// place of a key read from a file.
type raIdentity struct {
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
	Key   crypto.Signer
}

// algorithm returns the signing algorithm name for the key, or an error for
// key types Roles Anywhere does not accept.
func (id raIdentity) algorithm() (string, error) {
	switch id.Key.Public().(type) {
	case *rsa.PublicKey:
		return raAlgRSA, nil
	case *ecdsa.PublicKey:
		return raAlgECDSA, nil
	}
	return "", &CertificateError{Err: fmt.Errorf("private key is a %T; Roles Anywhere accepts RSA and ECDSA keys", id.Key.Public())}
}

// raSigned is a signed request's parts, kept for tests and debugging: none
// of them is secret.
type raSigned struct {
	CanonicalRequest string
	StringToSign     string
	Signature        string
	Authorization    string
}

// signCreateSession signs req, a POST to /sessions whose body is body, in
// place: it sets Host, X-Amz-Date, X-Amz-X509, X-Amz-X509-Chain (when there
// are intermediates) and Authorization. Content-Type must already be set;
// every header present is signed except Authorization, User-Agent and
// X-Amzn-Trace-Id. rnd feeds ECDSA signing (RSA PKCS#1 v1.5 is
// deterministic).
func signCreateSession(req *http.Request, body []byte, id raIdentity, region string, now time.Time, rnd io.Reader) (raSigned, error) {
	alg, err := id.algorithm()
	if err != nil {
		return raSigned{}, err
	}
	now = now.UTC()
	amzDate := now.Format(amzDateFormat)
	scope := now.Format(amzDayFormat) + "/" + region + "/" + raService + "/aws4_request"

	req.Host = req.URL.Host
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-X509", base64.StdEncoding.EncodeToString(id.Leaf.Raw))
	req.Header.Del("X-Amz-X509-Chain")
	if len(id.Chain) > 0 {
		parts := make([]string, len(id.Chain))
		for i, c := range id.Chain {
			parts[i] = base64.StdEncoding.EncodeToString(c.Raw)
		}
		req.Header.Set("X-Amz-X509-Chain", strings.Join(parts, ","))
	}
	req.Header.Del("Authorization")

	headers := map[string]string{"host": req.Host}
	for k, vs := range req.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Authorization", "User-Agent", "X-Amzn-Trace-Id":
			continue
		}
		trimmed := make([]string, len(vs))
		for i, v := range vs {
			trimmed[i] = strings.Join(strings.Fields(v), " ")
		}
		headers[strings.ToLower(k)] = strings.Join(trimmed, ",")
	}
	names := sortedKeys(headers)
	signedHeaders := strings.Join(names, ";")

	payload := sha256.Sum256(body)
	var cr strings.Builder
	cr.WriteString(req.Method + "\n")
	cr.WriteString(raPath + "\n")
	cr.WriteString(canonicalQuery(req.URL.Query()) + "\n")
	for _, n := range names {
		cr.WriteString(n + ":" + headers[n] + "\n")
	}
	cr.WriteString("\n" + signedHeaders + "\n")
	cr.WriteString(hex.EncodeToString(payload[:]))

	crHash := sha256.Sum256([]byte(cr.String()))
	sts := alg + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crHash[:])
	digest := sha256.Sum256([]byte(sts))
	// crypto.Signer: PKCS#1 v1.5 for RSA keys (opts is not *rsa.PSSOptions),
	// ASN.1 DER for ECDSA keys.
	sig, err := id.Key.Sign(rnd, digest[:], crypto.SHA256)
	if err != nil {
		// Signer errors from the standard library carry no key material.
		return raSigned{}, &CertificateError{Err: fmt.Errorf("signing with the private key: %w", err)}
	}
	s := raSigned{
		CanonicalRequest: cr.String(),
		StringToSign:     sts,
		Signature:        hex.EncodeToString(sig),
	}
	s.Authorization = alg + " Credential=" + id.Leaf.SerialNumber.String() + "/" + scope +
		", SignedHeaders=" + signedHeaders + ", Signature=" + s.Signature
	req.Header.Set("Authorization", s.Authorization)
	return s, nil
}

// canonicalQuery is SigV4's canonical query string: parameters sorted by
// name, names and values percent-encoded except for unreserved characters.
func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		vs := slices.Clone(q[k])
		slices.Sort(vs)
		for _, v := range vs {
			parts = append(parts, sigv4Escape(k)+"="+sigv4Escape(v))
		}
	}
	return strings.Join(parts, "&")
}

// sigv4Escape percent-encodes everything but A-Z a-z 0-9 - _ . ~ (RFC 3986
// unreserved), as SigV4 requires; url.QueryEscape differs only in writing
// a space as '+'.
func sigv4Escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// CertificateError is a problem with the Roles Anywhere certificate or
// private key: a file that cannot be read or parsed, a key that does not
// match the certificate, a certificate that is expired or not yet valid.
// The Refresher classes it as ClassCertificate: retried with the long
// backoff, the last good credentials kept. Its message never contains key
// material.
type CertificateError struct{ Err error }

func (e *CertificateError) Error() string { return "roles_anywhere: " + e.Err.Error() }
func (e *CertificateError) Unwrap() error { return e.Err }

func certErrorf(format string, args ...any) error {
	return &CertificateError{Err: fmt.Errorf(format, args...)}
}

// readPEMFile reads a PEM file of bounded size. key says whether it holds a
// private key, which only changes how errors are worded.
func readPEMFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, certErrorf("reading %s: %w", what, err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxPEMFileBytes+1))
	if err != nil {
		return nil, certErrorf("reading %s %s: %w", what, path, err)
	}
	if len(buf) > maxPEMFileBytes {
		return nil, certErrorf("%s %s is larger than %d bytes", what, path, maxPEMFileBytes)
	}
	return buf, nil
}

// loadCertificates reads the certificate file: PEM CERTIFICATE blocks, the
// leaf first and intermediates after. Other blocks (a private key kept in
// the same file) are skipped.
func loadCertificates(path string) (leaf *x509.Certificate, chain []*x509.Certificate, err error) {
	buf, err := readPEMFile(path, "certificate")
	if err != nil {
		return nil, nil, err
	}
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		b, buf = pem.Decode(buf)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, certErrorf("certificate %s: PEM block %d: %w", path, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, certErrorf("certificate %s holds no PEM CERTIFICATE block", path)
	}
	return certs[0], certs[1:], nil
}

// loadPrivateKey reads an RSA or EC private key in PKCS#1 ("RSA PRIVATE
// KEY"), PKCS#8 ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY") PEM. Other
// blocks (certificates, EC PARAMETERS) are skipped. Errors name the file and
// the block type but never quote the file's content or the parser's error,
// which could describe key bytes.
func loadPrivateKey(path string) (crypto.Signer, error) {
	buf, err := readPEMFile(path, "private key")
	if err != nil {
		return nil, err
	}
	defer clear(buf)
	for {
		var b *pem.Block
		b, buf = pem.Decode(buf)
		if b == nil {
			return nil, certErrorf("private key %s holds no PEM RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY block", path)
		}
		var key any
		switch b.Type {
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY":
			if _, enc := b.Headers["DEK-Info"]; enc {
				return nil, certErrorf("private key %s is encrypted; imds-shim needs it unencrypted (readable only by root)", path)
			}
		case "ENCRYPTED PRIVATE KEY":
			return nil, certErrorf("private key %s is encrypted (PKCS#8); imds-shim needs it unencrypted (readable only by root)", path)
		default:
			continue
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		clear(b.Bytes)
		if err != nil {
			return nil, certErrorf("private key %s: the %s block could not be parsed", path, b.Type)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		}
		return nil, certErrorf("private key %s is a %T key; Roles Anywhere accepts RSA and EC keys", path, key)
	}
}

// loadIdentity reads certificate and key and checks that they belong
// together and that the certificate is valid at now.
func loadIdentity(certFile, keyFile string, now time.Time) (raIdentity, error) {
	leaf, chain, err := loadCertificates(certFile)
	if err != nil {
		return raIdentity{}, err
	}
	key, err := loadPrivateKey(keyFile)
	if err != nil {
		return raIdentity{}, err
	}
	id := raIdentity{Leaf: leaf, Chain: chain, Key: key}
	if err := id.check(now); err != nil {
		return raIdentity{}, err
	}
	return id, nil
}

// check verifies what a CreateSession needs of the identity locally, so
// that such problems are reported as certificate errors rather than as an
// opaque AccessDenied from AWS.
func (id raIdentity) check(now time.Time) error {
	if err := keyMatches(id.Leaf, id.Key); err != nil {
		return err
	}
	if _, err := id.algorithm(); err != nil {
		return err
	}
	switch {
	case now.After(id.Leaf.NotAfter):
		return certErrorf("certificate (subject %q, serial %s) expired at %s", id.Leaf.Subject.String(), id.Leaf.SerialNumber, id.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(id.Leaf.NotBefore):
		return certErrorf("certificate (subject %q, serial %s) is not valid before %s (is the clock right?)", id.Leaf.Subject.String(), id.Leaf.SerialNumber, id.Leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// keyMatches checks that key is the private half of leaf's public key.
func keyMatches(leaf *x509.Certificate, key crypto.Signer) error {
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return certErrorf("the private key does not belong to the certificate (subject %q, serial %s)", leaf.Subject.String(), leaf.SerialNumber)
	}
	return nil
}

package rafake

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// A throwaway PKI for tests: CAs, intermediates and leaves generated at
// run time, so that no key is ever committed.

// KeyType selects a generated key.
type KeyType string

const (
	RSA2048 KeyType = "rsa2048"
	P256    KeyType = "p256"
	P384    KeyType = "p384"
)

// GenerateKey returns a fresh key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case P256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case P384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown key type %q", kt)
}

// Issued is a certificate and its key.
type Issued struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CertOptions shape an issued certificate; zero values give a valid leaf
// for an hour either side of now.
type CertOptions struct {
	CommonName  string
	KeyType     KeyType            // default P256
	Key         crypto.Signer      // use this key instead of generating one
	Serial      *big.Int           // default random 128-bit
	NotBefore   time.Time          // default now - 1h (CAs: a year ago)
	NotAfter    time.Time          // default now + 30 days (CAs: in a year)
	IsCA        bool               // an (intermediate) CA
	KeyUsage    x509.KeyUsage      // default digitalSignature (leaf) or certSign|CRLSign (CA)
	NoKeyUsage  bool               // leave KeyUsage empty even for the default
	ExtKeyUsage []x509.ExtKeyUsage // default clientAuth for leaves
}

// NewCA returns a self-signed root CA (the trust anchor).
func NewCA(name string, kt KeyType) (*Issued, error) {
	return issue(nil, CertOptions{CommonName: name, KeyType: kt, IsCA: true})
}

// Issue signs a certificate with ca.
func (ca *Issued) Issue(o CertOptions) (*Issued, error) { return issue(ca, o) }

func issue(parent *Issued, o CertOptions) (*Issued, error) {
	key := o.Key
	if key == nil {
		kt := o.KeyType
		if kt == "" {
			kt = P256
		}
		var err error
		if key, err = GenerateKey(kt); err != nil {
			return nil, err
		}
	}
	serial := o.Serial
	if serial == nil {
		serial, _ = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		serial.Add(serial, big.NewInt(1))
	}
	now := time.Now()
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = now.Add(-time.Hour)
		if o.IsCA {
			nb = now.Add(-365 * 24 * time.Hour)
		}
	}
	if na.IsZero() {
		na = now.Add(30 * 24 * time.Hour)
		if o.IsCA {
			na = now.Add(365 * 24 * time.Hour)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName, Organization: []string{"imds-shim tests"}},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  o.IsCA,
		KeyUsage:              o.KeyUsage,
		ExtKeyUsage:           o.ExtKeyUsage,
	}
	if tmpl.KeyUsage == 0 && !o.NoKeyUsage {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if o.IsCA {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
	}
	if !o.IsCA && tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	issuerCert, issuerKey := tmpl, key
	if parent != nil {
		issuerCert, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: c, Key: key}, nil
}

// CertsPEM encodes certificates as PEM, in order.
func CertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// KeyFormat is a private key PEM encoding.
type KeyFormat string

const (
	PKCS1 KeyFormat = "pkcs1" // RSA PRIVATE KEY
	PKCS8 KeyFormat = "pkcs8" // PRIVATE KEY
	SEC1  KeyFormat = "sec1"  // EC PRIVATE KEY
)

// KeyPEM encodes key in format; PKCS1 is for RSA keys only and SEC1 for EC
// keys only.
func KeyPEM(key crypto.Signer, format KeyFormat) ([]byte, error) {
	var b *pem.Block
	switch k := key.(type) {
	case *rsa.PrivateKey:
		switch format {
		case PKCS1:
			b = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		case SEC1:
			return nil, errors.New("an RSA key has no SEC 1 encoding")
		}
	case *ecdsa.PrivateKey:
		switch format {
		case SEC1:
			der, err := x509.MarshalECPrivateKey(k)
			if err != nil {
				return nil, err
			}
			b = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
		case PKCS1:
			return nil, errors.New("an EC key has no PKCS#1 encoding")
		}
	default:
		return nil, fmt.Errorf("unsupported key %T", key)
	}
	if format == PKCS8 {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		b = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	if b == nil {
		return nil, fmt.Errorf("unknown key format %q", format)
	}
	return pem.EncodeToMemory(b), nil
}

// WriteFiles writes leaf's certificate followed by chain to certPath, and
// leaf's key in format to keyPath (mode 0600), replacing them atomically
// (rename), as certbot or step would.
func WriteFiles(leaf *Issued, chain []*x509.Certificate, format KeyFormat, certPath, keyPath string) error {
	keyPEM, err := KeyPEM(leaf.Key, format)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(certPath, CertsPEM(append([]*x509.Certificate{leaf.Cert}, chain...)...), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rafake-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

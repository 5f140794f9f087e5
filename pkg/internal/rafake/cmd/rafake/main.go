// Command rafake runs the verifying IAM Roles Anywhere fake as a process,
// for tests of the real binary (e.g. inside a network namespace, next to
// moto's STS):
//
//	go run ./pkg/internal/rafake/cmd/rafake -listen 127.0.0.1:0 \
//	    -ca ca.pem -trust-anchor-arn ARN -profile-arn ARN -role-arn ARN[,ARN…]
//
// With -gen DIR and no -ca it first writes a throwaway PKI into DIR
// (ca.pem; host.pem = leaf then intermediate; host.key, PKCS#8) and trusts
// its CA. It prints "rafake listening on http://HOST:PORT" on standard
// output once it accepts connections, logs each refusal on standard error,
// and runs until killed.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/imds-shim/imds-shim/pkg/internal/rafake"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rafake:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	caFile := flag.String("ca", "", "PEM file of the trust anchor's CA certificate")
	gen := flag.String("gen", "", "write a throwaway CA, intermediate and leaf into this directory and trust that CA")
	keyType := flag.String("key-type", string(rafake.P256), "leaf key type for -gen: rsa2048, p256 or p384")
	ta := flag.String("trust-anchor-arn", "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "trust anchor ARN")
	profile := flag.String("profile-arn", "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809", "profile ARN")
	roles := flag.String("role-arn", "arn:aws:iam::123456789012:role/host-bootstrap", "comma-separated role ARNs the profile allows")
	region := flag.String("region", "", "region (default: the trust anchor ARN's)")
	flag.Parse()

	var anchor *x509.Certificate
	switch {
	case *caFile != "":
		buf, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		b, _ := pem.Decode(buf)
		if b == nil || b.Type != "CERTIFICATE" {
			return fmt.Errorf("%s holds no PEM certificate", *caFile)
		}
		if anchor, err = x509.ParseCertificate(b.Bytes); err != nil {
			return err
		}
	case *gen != "":
		var err error
		if anchor, err = generate(*gen, rafake.KeyType(*keyType)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("give -ca or -gen")
	}
	srv, err := rafake.New(rafake.Config{
		TrustAnchorARN: *ta, TrustAnchor: anchor, ProfileARN: *profile,
		RoleARNs: strings.Split(*roles, ","), Region: *region,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "rafake: "+format+"\n", args...) },
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("rafake listening on http://%s\n", l.Addr())
	return http.Serve(l, srv)
}

func generate(dir string, kt rafake.KeyType) (*x509.Certificate, error) {
	ca, err := rafake.NewCA("rafake root CA", rafake.P256)
	if err != nil {
		return nil, err
	}
	inter, err := ca.Issue(rafake.CertOptions{CommonName: "rafake intermediate CA", IsCA: true})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	leaf, err := inter.Issue(rafake.CertOptions{CommonName: host, KeyType: kt})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), rafake.CertsPEM(ca.Cert), 0o644); err != nil {
		return nil, err
	}
	if err := rafake.WriteFiles(leaf, []*x509.Certificate{inter.Cert}, rafake.PKCS8,
		filepath.Join(dir, "host.pem"), filepath.Join(dir, "host.key")); err != nil {
		return nil, err
	}
	return ca.Cert, nil
}

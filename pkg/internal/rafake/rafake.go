// Package rafake is a verifying fake of IAM Roles Anywhere's CreateSession
// endpoint (POST /sessions), for tests of the roles_anywhere source and of
// the real binary. No emulator implements Roles Anywhere (moto lists it as
// unimplemented), so this one checks what the service checks and refuses
// what it refuses:
//
//   - the profileArn, roleArn and trustAnchorArn query parameters are
//     present and name the configured trust anchor and profile, and the role
//     is one the profile allows;
//   - X-Amz-Date is within ±5 minutes of now, and the credential scope is
//     that date, the configured region, rolesanywhere and aws4_request;
//   - the Credential is the serial number (decimal) of the X-Amz-X509 leaf;
//   - the leaf chains to the trust anchor's CA through the X-Amz-X509-Chain
//     intermediates, is valid now, is not a CA and allows digitalSignature;
//   - the algorithm matches the leaf's key type (AWS4-X509-RSA-SHA256 for
//     RSA, PKCS#1 v1.5; AWS4-X509-ECDSA-SHA256 for ECDSA, ASN.1 DER);
//   - SignedHeaders is sorted, lower case, without duplicates, and includes
//     host, x-amz-date, x-amz-x509 (and x-amz-x509-chain when sent);
//   - the signature verifies over the canonical request recomputed from
//     what was received (method, path, query, the signed headers, the body's
//     SHA-256);
//   - the JSON body's durationSeconds is within 900..43200.
//
// Refusals carry the service's error shapes (X-Amzn-ErrorType and a JSON
// message): 403 AccessDeniedException for authentication failures, 400
// ValidationException, 404 ResourceNotFoundException. Accepted requests get
// 201 with credentialSet[0].credentials: an ASIA… access key, a secret and
// a session token that moto's STS accepts as source credentials.
//
// Start runs it in-process for a test; cmd/rafake runs it as a process for
// the real binary in a network namespace.
package rafake

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Reasons a request was refused, as Rejection.Reason reports them.
const (
	ReasonMethod        = "method"         // not POST /sessions
	ReasonMissingParam  = "missing-param"  // a query parameter absent or repeated
	ReasonTrustAnchor   = "trust-anchor"   // unknown trust anchor
	ReasonProfile       = "profile"        // unknown profile
	ReasonRole          = "role"           // role not in the profile
	ReasonAuthorization = "authorization"  // Authorization missing or malformed
	ReasonDate          = "date"           // X-Amz-Date missing, malformed or outside ±5 min
	ReasonScope         = "scope"          // scope date, region, service or terminator wrong
	ReasonCertificate   = "certificate"    // X-Amz-X509 or chain unreadable
	ReasonSerial        = "serial"         // Credential is not the leaf's serial
	ReasonUntrusted     = "untrusted"      // leaf does not chain to the trust anchor, or is expired
	ReasonLeafIsCA      = "leaf-is-ca"     // leaf is a CA certificate
	ReasonKeyUsage      = "key-usage"      // leaf lacks digitalSignature
	ReasonAlgorithm     = "algorithm"      // algorithm does not match the key
	ReasonSignedHeaders = "signed-headers" // unsorted, duplicated, or missing a required header
	ReasonSignature     = "signature"      // signature does not verify
	ReasonBody          = "body"           // body not JSON
	ReasonDuration      = "duration"       // durationSeconds outside 900..43200
	ReasonInjected      = "injected"       // a failure queued by FailNext
)

// Config describes the Roles Anywhere resources the fake knows.
type Config struct {
	// TrustAnchorARN names the trust anchor whose CA is TrustAnchor.
	TrustAnchorARN string
	TrustAnchor    *x509.Certificate
	// ProfileARN names the profile; RoleARNs are the roles it allows.
	ProfileARN string
	RoleARNs   []string
	// Region defaults to the trust anchor ARN's.
	Region string
	// Now defaults to time.Now.
	Now func() time.Time
	// Logf, if set, is told of every refusal and session (no secrets).
	Logf func(format string, args ...any)
}

// Session is an accepted CreateSession.
type Session struct {
	Serial      string // leaf serial, decimal
	Subject     string
	RoleARN     string
	Duration    time.Duration
	AccessKeyID string
	Expires     time.Time
}

// Rejection is a refused request.
type Rejection struct {
	Reason string
	Status int
	Detail string
}

// Server is the fake. It is an http.Handler.
type Server struct {
	cfg    Config
	region string

	mu         sync.Mutex
	sessions   []Session
	rejections []Rejection
	faults     []fault
}

type fault struct {
	status int
	code   string
}

var arnRE = regexp.MustCompile(`^arn:aws[a-z0-9-]*:rolesanywhere:([a-z0-9-]+):[0-9]{12}:trust-anchor/`)

// New returns a fake for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.TrustAnchor == nil || cfg.TrustAnchorARN == "" || cfg.ProfileARN == "" || len(cfg.RoleARNs) == 0 {
		return nil, fmt.Errorf("rafake: TrustAnchor, TrustAnchorARN, ProfileARN and RoleARNs are required")
	}
	s := &Server{cfg: cfg, region: cfg.Region}
	if s.region == "" {
		m := arnRE.FindStringSubmatch(cfg.TrustAnchorARN)
		if m == nil {
			return nil, fmt.Errorf("rafake: %q is not a trust anchor ARN", cfg.TrustAnchorARN)
		}
		s.region = m[1]
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	return s, nil
}

// Start runs a fake for the test on 127.0.0.1 and returns it with its URL.
func Start(tb testing.TB, cfg Config) (*Server, string) {
	tb.Helper()
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(s)
	tb.Cleanup(ts.Close)
	return s, ts.URL
}

// Sessions returns the accepted sessions so far.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sessions)
}

// Rejections returns the refused requests so far.
func (s *Server) Rejections() []Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rejections)
}

// FailNext makes the next n requests that pass every check fail with
// status and code instead (throttling, 5xx, …).
func (s *Server) FailNext(n, status int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, fault{status, code})
	}
}

type refusal struct {
	reason string
	status int
	code   string
	msg    string
}

func refuse(reason string, status int, code, format string, args ...any) *refusal {
	return &refusal{reason, status, code, fmt.Sprintf(format, args...)}
}

func denied(reason, format string, args ...any) *refusal {
	return refuse(reason, http.StatusForbidden, "AccessDeniedException", format, args...)
}

const maxBody = 64 << 10

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		s.reply(w, nil, refuse(ReasonBody, 400, "ValidationException", "body unreadable or too large"))
		return
	}
	sess, ref := s.verify(r, body)
	if ref == nil {
		s.mu.Lock()
		if len(s.faults) > 0 {
			f := s.faults[0]
			s.faults = s.faults[1:]
			ref = refuse(ReasonInjected, f.status, f.code, "injected failure")
		}
		s.mu.Unlock()
	}
	s.reply(w, sess, ref)
}

func (s *Server) reply(w http.ResponseWriter, sess *session, ref *refusal) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Requestid", randHex(16))
	if ref != nil {
		s.mu.Lock()
		s.rejections = append(s.rejections, Rejection{Reason: ref.reason, Status: ref.status, Detail: ref.msg})
		s.mu.Unlock()
		if s.cfg.Logf != nil {
			s.cfg.Logf("refused (%s, HTTP %d %s): %s", ref.reason, ref.status, ref.code, ref.msg)
		}
		w.Header().Set("X-Amzn-ErrorType", ref.code)
		w.WriteHeader(ref.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": ref.msg})
		return
	}
	now := s.cfg.Now().UTC()
	exp := now.Add(sess.duration).Truncate(time.Second)
	ak := "ASIA" + randBase32(16)
	roleName := sess.role[strings.LastIndexByte(sess.role, '/')+1:]
	account := strings.Split(sess.role, ":")[4]
	serialHex := hex.EncodeToString(sess.leaf.SerialNumber.Bytes())
	out := map[string]any{
		"credentialSet": []any{map[string]any{
			"assumedRoleUser": map[string]string{
				"arn":           "arn:aws:sts::" + account + ":assumed-role/" + roleName + "/" + serialHex,
				"assumedRoleId": "AROA" + randBase32(17) + ":" + serialHex,
			},
			"credentials": map[string]string{
				"accessKeyId":     ak,
				"secretAccessKey": base64.StdEncoding.EncodeToString(randBytes(30)),
				"sessionToken":    base64.StdEncoding.EncodeToString(randBytes(300)),
				"expiration":      exp.Format(time.RFC3339),
			},
			"packedPolicySize": 0,
			"roleArn":          sess.role,
			"sourceIdentity":   sess.leaf.Subject.String(),
		}},
		"subjectArn": strings.Replace(s.cfg.TrustAnchorARN, "trust-anchor/", "subject/", 1),
	}
	s.mu.Lock()
	s.sessions = append(s.sessions, Session{
		Serial: sess.leaf.SerialNumber.String(), Subject: sess.leaf.Subject.String(), RoleARN: sess.role,
		Duration: sess.duration, AccessKeyID: ak, Expires: exp,
	})
	s.mu.Unlock()
	if s.cfg.Logf != nil {
		s.cfg.Logf("session issued: serial %s, role %s, %s, access key %s", sess.leaf.SerialNumber, sess.role, sess.duration, ak)
	}
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(out)
}

type session struct {
	leaf     *x509.Certificate
	role     string
	duration time.Duration
}

var authRE = regexp.MustCompile(`^(AWS4-X509-RSA-SHA256|AWS4-X509-ECDSA-SHA256) Credential=([^,/ ]+)/([^, ]+), ?SignedHeaders=([^, ]+), ?Signature=([0-9a-f]+)$`)

// verify performs every check; the order follows the service's: request
// shape, then authentication, then authorisation, then the body.
func (s *Server) verify(r *http.Request, body []byte) (*session, *refusal) {
	if r.Method != http.MethodPost || r.URL.Path != "/sessions" {
		return nil, refuse(ReasonMethod, 404, "ResourceNotFoundException", "no such operation %s %s", r.Method, r.URL.Path)
	}
	q := r.URL.Query()
	for _, p := range []string{"profileArn", "roleArn", "trustAnchorArn"} {
		if len(q[p]) != 1 || q.Get(p) == "" {
			return nil, refuse(ReasonMissingParam, 400, "ValidationException", "%s must be given exactly once", p)
		}
	}

	// Authentication.
	m := authRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return nil, denied(ReasonAuthorization, "missing or malformed Authorization header")
	}
	alg, credSerial, scope, signedHeaders, sigHex := m[1], m[2], m[3], m[4], m[5]
	now := s.cfg.Now().UTC()
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return nil, denied(ReasonDate, "X-Amz-Date %q is not yyyymmddThhmmssZ", amzDate)
	}
	if d := now.Sub(t); d > 5*time.Minute || d < -5*time.Minute {
		return nil, denied(ReasonDate, "Signature expired: %s is not within 5 minutes of %s", amzDate, now.Format("20060102T150405Z"))
	}
	sp := strings.Split(scope, "/")
	if len(sp) != 4 || sp[0] != t.Format("20060102") || sp[1] != s.region || sp[2] != "rolesanywhere" || sp[3] != "aws4_request" {
		return nil, denied(ReasonScope, "credential scope %q must be %s/%s/rolesanywhere/aws4_request", scope, t.Format("20060102"), s.region)
	}
	leaf, chain, ref := parseCerts(r.Header)
	if ref != nil {
		return nil, ref
	}
	if credSerial != leaf.SerialNumber.String() {
		return nil, denied(ReasonSerial, "Credential %q is not the certificate's serial number %s", credSerial, leaf.SerialNumber)
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return nil, denied(ReasonLeafIsCA, "the signing certificate is a CA certificate")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, denied(ReasonKeyUsage, "the signing certificate does not allow digitalSignature")
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.cfg.TrustAnchor)
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, denied(ReasonUntrusted, "Untrusted signing certificate: %v", err)
	}
	var wantAlg string
	switch leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		wantAlg = "AWS4-X509-RSA-SHA256"
	case *ecdsa.PublicKey:
		wantAlg = "AWS4-X509-ECDSA-SHA256"
	}
	if alg != wantAlg {
		return nil, denied(ReasonAlgorithm, "algorithm %s does not match the certificate's %s key", alg, leaf.PublicKeyAlgorithm)
	}
	names := strings.Split(signedHeaders, ";")
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		return nil, denied(ReasonSignedHeaders, "SignedHeaders %q must be sorted and without duplicates", signedHeaders)
	}
	required := []string{"host", "x-amz-date", "x-amz-x509"}
	if r.Header.Get("X-Amz-X509-Chain") != "" {
		required = append(required, "x-amz-x509-chain")
	}
	for _, h := range required {
		if !slices.Contains(names, h) {
			return nil, denied(ReasonSignedHeaders, "SignedHeaders %q must include %s", signedHeaders, h)
		}
	}
	for _, h := range names {
		if h != strings.ToLower(h) || (h != "host" && len(r.Header.Values(h)) == 0) {
			return nil, denied(ReasonSignedHeaders, "signed header %q is not lower case or was not sent", h)
		}
	}
	sig, _ := hex.DecodeString(sigHex)
	digest := sha256.Sum256([]byte(stringToSign(r, body, alg, amzDate, scope, names)))
	var ok bool
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest[:], sig)
	}
	if !ok {
		return nil, denied(ReasonSignature, "Signature validation failed")
	}

	// Authorisation.
	if q.Get("trustAnchorArn") != s.cfg.TrustAnchorARN {
		return nil, refuse(ReasonTrustAnchor, 404, "ResourceNotFoundException", "trust anchor %q not found", q.Get("trustAnchorArn"))
	}
	if q.Get("profileArn") != s.cfg.ProfileARN {
		return nil, refuse(ReasonProfile, 404, "ResourceNotFoundException", "profile %q not found", q.Get("profileArn"))
	}
	if !slices.Contains(s.cfg.RoleARNs, q.Get("roleArn")) {
		return nil, denied(ReasonRole, "role %q is not in the profile", q.Get("roleArn"))
	}

	// Body.
	var in struct {
		DurationSeconds *int64 `json:"durationSeconds"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return nil, refuse(ReasonBody, 400, "ValidationException", "body is not JSON")
		}
	}
	secs := int64(3600)
	if in.DurationSeconds != nil {
		secs = *in.DurationSeconds
	}
	if secs < 900 || secs > 43200 {
		return nil, refuse(ReasonDuration, 400, "ValidationException", "durationSeconds %d is outside 900..43200", secs)
	}
	return &session{leaf: leaf, role: q.Get("roleArn"), duration: time.Duration(secs) * time.Second}, nil
}

func parseCerts(h http.Header) (*x509.Certificate, []*x509.Certificate, *refusal) {
	der, err := base64.StdEncoding.DecodeString(h.Get("X-Amz-X509"))
	if err != nil || len(der) == 0 {
		return nil, nil, denied(ReasonCertificate, "X-Amz-X509 is missing or not base64")
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, denied(ReasonCertificate, "X-Amz-X509 is not a certificate: %v", err)
	}
	var chain []*x509.Certificate
	if v := h.Get("X-Amz-X509-Chain"); v != "" {
		for i, part := range strings.Split(v, ",") {
			der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(part))
			if err != nil {
				return nil, nil, denied(ReasonCertificate, "X-Amz-X509-Chain entry %d is not base64", i)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, nil, denied(ReasonCertificate, "X-Amz-X509-Chain entry %d is not a certificate: %v", i, err)
			}
			chain = append(chain, c)
		}
	}
	return leaf, chain, nil
}

// stringToSign recomputes, from the request as received, SigV4's canonical
// request and the string to sign.
func stringToSign(r *http.Request, body []byte, alg, amzDate, scope string, signed []string) string {
	var cr strings.Builder
	cr.WriteString(r.Method + "\n")
	cr.WriteString(r.URL.EscapedPath() + "\n")
	cr.WriteString(canonicalQuery(r.URL.Query()) + "\n")
	for _, h := range signed {
		var v string
		if h == "host" {
			v = r.Host
		} else {
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		cr.WriteString(h + ":" + v + "\n")
	}
	cr.WriteString("\n" + strings.Join(signed, ";") + "\n")
	ph := sha256.Sum256(body)
	cr.WriteString(hex.EncodeToString(ph[:]))
	crh := sha256.Sum256([]byte(cr.String()))
	return alg + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crh[:])
}

// canonicalQuery sorts by encoded name, then by encoded value.
func canonicalQuery(q url.Values) string {
	type kv struct{ k, v string }
	var kvs []kv
	for k, vs := range q {
		for _, v := range vs {
			kvs = append(kvs, kv{esc(k), esc(v)})
		}
	}
	slices.SortFunc(kvs, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	parts := make([]string, len(kvs))
	for i, p := range kvs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

func esc(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randHex(n int) string { return hex.EncodeToString(randBytes(n)) }

const base32Upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func randBase32(n int) string {
	b := make([]byte, n)
	for i := range b {
		v, _ := rand.Int(rand.Reader, big.NewInt(32))
		b[i] = base32Upper[v.Int64()]
	}
	return string(b)
}

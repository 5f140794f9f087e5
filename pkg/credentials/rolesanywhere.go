package credentials

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/imds-shim/imds-shim/pkg/config/awsarn"
)

// RolesAnywhereConfig is the roles_anywhere source: an X.509 certificate
// and its key, exchanged for role credentials by IAM Roles Anywhere's
// CreateSession.
type RolesAnywhereConfig struct {
	// CertificateFile is a PEM file, the leaf certificate first and its
	// intermediates after (roles_anywhere.certificate).
	CertificateFile string
	// PrivateKeyFile is the leaf's RSA or EC key in PKCS#1, PKCS#8 or
	// SEC 1 PEM, unencrypted (roles_anywhere.private_key). It may be the
	// same file as CertificateFile.
	PrivateKeyFile string
	// TrustAnchorARN and ProfileARN name the Roles Anywhere resources
	// (roles_anywhere.trust_anchor_arn, roles_anywhere.profile_arn); the
	// trust anchor's region is the region called.
	TrustAnchorARN string
	ProfileARN     string
	// RoleARN is the role CreateSession returns credentials for
	// (roles_anywhere.role_arn). A served role with this ARN is served from
	// CreateSession directly; every other served role is assumed with
	// these credentials (role chaining, at most 1 hour).
	RoleARN string
	// Endpoint overrides https://rolesanywhere.REGION.amazonaws.com
	// (roles_anywhere.endpoint), with the rules of sts_endpoint: http only
	// for loopback and private IP literals.
	Endpoint string
	// Region overrides the region taken from TrustAnchorARN for signing;
	// normally empty.
	Region string
	// Duration is the length of the source session used for role chaining
	// (roles_anywhere.duration), 15m..12h; zero means 1 hour. A role
	// served directly gets its own duration instead.
	Duration time.Duration
}

// check checks the invariants NewRolesAnywhere relies on and returns the
// parsed trust anchor and role. The configuration file's roles_anywhere
// block is validated key by key by pkg/config (the one validation, which
// names YAML keys) before a RolesAnywhereConfig is built from it; these
// errors name fields, for callers that build one by hand.
func (c *RolesAnywhereConfig) check() (awsarn.RolesAnywhere, RoleARN, error) {
	var errs []error
	if c.CertificateFile == "" || c.PrivateKeyFile == "" {
		errs = append(errs, errors.New("certificate and private key files are required"))
	}
	ta, err := awsarn.ParseRolesAnywhere(c.TrustAnchorARN, awsarn.TrustAnchor)
	if err != nil {
		errs = append(errs, fmt.Errorf("trust anchor ARN: %w", err))
	}
	if _, err := awsarn.ParseRolesAnywhere(c.ProfileARN, awsarn.Profile); err != nil {
		errs = append(errs, fmt.Errorf("profile ARN: %w", err))
	}
	role, err := ParseRoleARN(c.RoleARN)
	if err != nil {
		errs = append(errs, fmt.Errorf("role ARN: %w", err))
	}
	if _, ok := awsarn.PartitionOfRegion(c.Region); c.Region != "" && !ok {
		errs = append(errs, fmt.Errorf("region: %q is not a region of any AWS partition", c.Region))
	}
	if d := c.Duration; d != 0 && (d < MinDuration || d > MaxDuration || d%time.Second != 0) {
		errs = append(errs, fmt.Errorf("duration: %s is not a whole number of seconds in %s..%s (CreateSession durationSeconds 900..43200)", d, MinDuration, MaxDuration))
	}
	return ta, role, errors.Join(errs...)
}

// ServesDirectly reports whether the served role roleARN is the one
// CreateSession returns, so that it is served without role chaining.
func (c *RolesAnywhereConfig) ServesDirectly(roleARN string) bool {
	a, err1 := ParseRoleARN(roleARN)
	b, err2 := ParseRoleARN(c.RoleARN)
	return err1 == nil && err2 == nil && a == b
}

// RolesAnywhereOptions are the source's injected dependencies; zero values
// get production defaults.
type RolesAnywhereOptions struct {
	// HTTPClient defaults to a client with the proxy settings of the
	// environment that never follows redirects.
	HTTPClient *http.Client
	// Now defaults to time.Now; it stamps requests and judges certificate
	// validity.
	Now func() time.Time
	// Logger is warned when a session is signed with a certificate that
	// expires within CertificateWarnBefore; nil discards.
	Logger *slog.Logger
}

// RolesAnywhere calls IAM Roles Anywhere's CreateSession with the
// configured certificate. It re-reads the certificate and key for every
// call, so a rotated certificate is used at the next refresh without a
// restart. It is safe for concurrent use.
//
// It is an aws.CredentialsProvider (Retrieve) for an STS client's source
// credentials; NewRolesAnywhereSTSClient wires it into the Refresher.
type RolesAnywhere struct {
	cfg      RolesAnywhereConfig
	region   string
	endpoint string
	role     RoleARN
	duration time.Duration
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger

	cacheOnce sync.Once
	cache     *aws.CredentialsCache
}

// NewRolesAnywhere validates cfg and returns the source. It reads no file:
// problems with the certificate or key show up as CertificateError at the
// first call (and in CheckRolesAnywhere).
func NewRolesAnywhere(cfg RolesAnywhereConfig, opts RolesAnywhereOptions) (*RolesAnywhere, error) {
	ta, role, err := cfg.check()
	if err != nil {
		return nil, fmt.Errorf("roles_anywhere source: %w", err)
	}
	region := ta.Region
	if cfg.Region != "" {
		region = cfg.Region
	}
	r := &RolesAnywhere{
		cfg:      cfg,
		region:   region,
		endpoint: strings.TrimSuffix(cfg.Endpoint, "/"),
		role:     role,
		duration: cfg.Duration,
		client:   opts.HTTPClient,
		now:      opts.Now,
		log:      opts.Logger,
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.endpoint == "" {
		p, _ := awsarn.LookupPartition(ta.Partition) // known: the ARN parsed
		r.endpoint = "https://rolesanywhere." + region + "." + p.DNSSuffix
	}
	if r.duration == 0 {
		r.duration = DefaultDuration
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		r.client = &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return r, nil
}

// Endpoint returns the CreateSession base URL in use.
func (r *RolesAnywhere) Endpoint() string { return r.endpoint }

// Region returns the region requests are signed for.
func (r *RolesAnywhere) Region() string { return r.region }

// Config returns the configuration.
func (r *RolesAnywhere) Config() RolesAnywhereConfig { return r.cfg }

// maxRAResponse bounds CreateSession's answer.
const maxRAResponse = 1 << 20

// CreateSession reads the certificate and key, signs a CreateSession
// request for duration and returns the session credentials for
// roles_anywhere.role_arn. Errors: *CertificateError for local certificate
// or key problems, *RolesAnywhereAPIError for an answer other than 2xx,
// transport errors wrapped as they are, and an invalid-response error for
// an unusable 2xx answer.
func (r *RolesAnywhere) CreateSession(ctx context.Context, duration time.Duration) (Credentials, error) {
	now := r.now()
	id, err := loadIdentity(r.cfg.CertificateFile, r.cfg.PrivateKeyFile, now)
	if err != nil {
		return Credentials{}, err
	}
	req, _, err := r.newRequest(ctx, id, duration, now, rand.Reader)
	if err != nil {
		return Credentials{}, err
	}
	req.Header.Set("User-Agent", "imds-shim")
	resp, err := r.client.Do(req)
	if err != nil {
		return Credentials{}, fmt.Errorf("calling Roles Anywhere CreateSession: %w", err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxRAResponse+1))
	if err != nil {
		return Credentials{}, fmt.Errorf("reading Roles Anywhere CreateSession answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Credentials{}, newRAAPIError(resp, buf)
	}
	if len(buf) > maxRAResponse {
		return Credentials{}, &invalidResponseError{"Roles Anywhere CreateSession answer is larger than 1 MiB"}
	}
	c, err := parseCreateSession(buf)
	if err == nil && id.Leaf.NotAfter.Sub(now) < CertificateWarnBefore {
		r.log.Warn("roles_anywhere certificate expires soon; renew it (it is re-read at every refresh)",
			"certificate", r.cfg.CertificateFile, "subject", id.Leaf.Subject.String(),
			"serial", id.Leaf.SerialNumber.String(), "expires", id.Leaf.NotAfter)
	}
	return c, err
}

// CertificateStatus reads the certificate file (not the key) and describes
// it, for status and for imds_shim_certificate_expiry_seconds
// (report.ExpirySeconds(now)); Warnings says when it expires within
// CertificateWarnBefore or has expired.
func (r *RolesAnywhere) CertificateStatus(now time.Time) (CertificateReport, error) {
	leaf, chain, err := loadCertificates(r.cfg.CertificateFile)
	if err != nil {
		return CertificateReport{}, err
	}
	rep := describeCertificate(leaf, chain)
	rep.Warnings = expiryWarnings(leaf, now)
	return rep, nil
}

// newRequest builds and signs a CreateSession request.
func (r *RolesAnywhere) newRequest(ctx context.Context, id raIdentity, duration time.Duration, now time.Time, rnd io.Reader) (*http.Request, raSigned, error) {
	body, _ := json.Marshal(struct {
		DurationSeconds int64 `json:"durationSeconds"`
	}{int64(duration / time.Second)})
	q := url.Values{}
	q.Set("profileArn", r.cfg.ProfileARN)
	q.Set("roleArn", r.cfg.RoleARN)
	q.Set("trustAnchorArn", r.cfg.TrustAnchorARN)
	u := r.endpoint + raPath + "?" + canonicalQuery(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, raSigned{}, fmt.Errorf("building CreateSession request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	signed, err := signCreateSession(req, body, id, r.region, now, rnd)
	if err != nil {
		return nil, raSigned{}, err
	}
	return req, signed, nil
}

// parseCreateSession reads credentialSet[0].credentials.
func parseCreateSession(buf []byte) (Credentials, error) {
	var out struct {
		CredentialSet []struct {
			Credentials *struct {
				AccessKeyID     string `json:"accessKeyId"`
				SecretAccessKey string `json:"secretAccessKey"`
				SessionToken    string `json:"sessionToken"`
				Expiration      string `json:"expiration"`
			} `json:"credentials"`
		} `json:"credentialSet"`
	}
	if err := json.Unmarshal(buf, &out); err != nil {
		// The JSON error may quote the body, which holds a secret key.
		return Credentials{}, &invalidResponseError{"Roles Anywhere CreateSession answer is not the expected JSON"}
	}
	if len(out.CredentialSet) == 0 || out.CredentialSet[0].Credentials == nil {
		return Credentials{}, &invalidResponseError{"Roles Anywhere CreateSession answer has no credentialSet[0].credentials"}
	}
	c := out.CredentialSet[0].Credentials
	exp, err := time.Parse(time.RFC3339, c.Expiration)
	if err != nil {
		return Credentials{}, &invalidResponseError{fmt.Sprintf("Roles Anywhere CreateSession answer has an unreadable expiration %.40q", c.Expiration)}
	}
	creds := Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Expires: exp}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" || creds.SessionToken == "" {
		return Credentials{}, &invalidResponseError{"Roles Anywhere CreateSession returned incomplete credentials"}
	}
	return creds, nil
}

// RolesAnywhereAPIError is a CreateSession answer other than 2xx. It is a
// smithy.APIError, so it is classed like an STS error of the same code,
// and by its status otherwise.
type RolesAnywhereAPIError struct {
	StatusCode int
	Code       string
	Message    string
	RequestID  string
}

func (e *RolesAnywhereAPIError) Error() string {
	s := fmt.Sprintf("Roles Anywhere CreateSession: HTTP %d %s", e.StatusCode, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

// ErrorCode, ErrorMessage and ErrorFault implement smithy.APIError.
func (e *RolesAnywhereAPIError) ErrorCode() string    { return e.Code }
func (e *RolesAnywhereAPIError) ErrorMessage() string { return e.Message }

// ErrorFault implements smithy.APIError.
func (e *RolesAnywhereAPIError) ErrorFault() smithy.ErrorFault {
	if e.StatusCode >= 500 {
		return smithy.FaultServer
	}
	return smithy.FaultClient
}

var _ smithy.APIError = (*RolesAnywhereAPIError)(nil)

// errorClass is consulted by classify before anything else.
func (e *RolesAnywhereAPIError) errorClass() string {
	if c := classifyCode(e.Code); c != "" {
		return c
	}
	switch s := e.StatusCode; {
	case s == 429:
		return ClassThrottling
	case s >= 500:
		return ClassServer
	case s == 401 || s == 403:
		return ClassAccessDenied
	case s == 400 || s == 404 || s == 409 || s == 422:
		// ValidationException, ResourceNotFoundException: a wrong ARN,
		// a disabled profile or trust anchor, a duration over the
		// profile's limit. Retrying soon will not help.
		return ClassInvalidRequest
	}
	return ClassUnknown
}

func (e *CertificateError) errorClass() string { return ClassCertificate }

// newRAAPIError reads the error code from X-Amzn-ErrorType or the JSON body
// (__type, code) and the message from message/Message.
func newRAAPIError(resp *http.Response, body []byte) *RolesAnywhereAPIError {
	e := &RolesAnywhereAPIError{StatusCode: resp.StatusCode, RequestID: cleanText(resp.Header.Get("X-Amzn-Requestid"), 100)}
	var j struct {
		Type     string `json:"__type"`
		Code     string `json:"code"`
		Message  string `json:"message"`
		MessageU string `json:"Message"`
	}
	_ = json.Unmarshal(body, &j)
	code := resp.Header.Get("X-Amzn-ErrorType")
	if code == "" {
		code = j.Type
	}
	if code == "" {
		code = j.Code
	}
	// "Code:http://…" and "ns#Code" forms, as restjson.SanitizeErrorCode.
	code, _, _ = strings.Cut(code, ":")
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	e.Code = cleanText(code, 100)
	if e.Code == "" {
		e.Code = "HTTP" + strconv.Itoa(resp.StatusCode)
	}
	msg := j.Message
	if msg == "" {
		msg = j.MessageU
	}
	e.Message = cleanText(msg, 300)
	return e
}

// cleanText keeps an untrusted string printable and bounded for logs.
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// Retrieve implements aws.CredentialsProvider: a CreateSession of the
// configured Duration, for signing the STS calls that assume the other
// served roles.
func (r *RolesAnywhere) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := r.CreateSession(ctx, r.duration)
	if err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		Source: "RolesAnywhere", CanExpire: true, Expires: c.Expires, AccountID: r.role.AccountID,
	}, nil
}

// Provider returns the source credentials for STS clients: Retrieve behind
// one aws.CredentialsCache shared by every client of this source, so that
// all chained roles share one Roles Anywhere session, renewed 10 minutes
// before it expires.
func (r *RolesAnywhere) Provider() aws.CredentialsProvider {
	r.cacheOnce.Do(func() {
		r.cache = aws.NewCredentialsCache(r, func(o *aws.CredentialsCacheOptions) {
			o.ExpiryWindow = 10 * time.Minute
		})
	})
	return r.cache
}

// NewRolesAnywhereSTSClient is NewSTSClient for the roles_anywhere source.
// The returned STSAPI serves cfg's role: when cfg.RoleARN is
// roles_anywhere.role_arn, AssumeRole is answered by CreateSession itself
// (no chaining, up to 12 hours, session name set by AWS from the
// certificate's serial); otherwise it is STS AssumeRole signed with the
// Roles Anywhere session (ra.Provider()), capped at 1 hour by AWS. Region
// and sts_endpoint apply to the STS client as with NewSTSClient; the STS
// region defaults to the trust anchor's.
func NewRolesAnywhereSTSClient(_ context.Context, cfg Config, ra *RolesAnywhere, optFns ...func(*sts.Options)) (STSAPI, error) {
	if ra == nil {
		return nil, errors.New("creating Roles Anywhere STS client: nil source")
	}
	if _, err := ParseRoleARN(cfg.RoleARN); err != nil {
		return nil, fmt.Errorf("parsing role_arn: %w", err)
	}
	region := cfg.Region
	if region == "" {
		region = ra.region
	}
	// No shared files, environment keys or profiles play a part: the
	// source is the certificate.
	o := sts.Options{Region: region, Credentials: ra.Provider()}
	if cfg.STSEndpoint != "" {
		o.BaseEndpoint = aws.String(cfg.STSEndpoint)
	}
	return &raSTS{ra: ra, sts: sts.New(o, optFns...)}, nil
}

// raSTS is the STSAPI of a roles_anywhere-sourced role.
type raSTS struct {
	ra  *RolesAnywhere
	sts STSAPI
}

// errNotWithRolesAnywhere is returned for a web identity call, which the
// configuration rules out.
var errNotWithRolesAnywhere = errors.New("web_identity_token_file cannot be combined with roles_anywhere")

func (s *raSTS) AssumeRoleWithWebIdentity(context.Context, *sts.AssumeRoleWithWebIdentityInput, ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	return nil, &invalidRequestError{errNotWithRolesAnywhere}
}

func (s *raSTS) AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, optFns ...func(*sts.Options)) (*sts.AssumeRoleOutput, error) {
	if !s.ra.cfg.ServesDirectly(aws.ToString(in.RoleArn)) {
		return s.sts.AssumeRole(ctx, in, optFns...)
	}
	if in.Policy != nil || len(in.PolicyArns) > 0 || len(in.Tags) > 0 || len(in.TransitiveTagKeys) > 0 ||
		in.ExternalId != nil || in.SourceIdentity != nil {
		return nil, &invalidRequestError{errors.New("roles_anywhere.role_arn is served from CreateSession directly, which takes no policy, policy_arns, tags, transitive_tag_keys, external_id or source_identity")}
	}
	d := s.ra.duration
	if in.DurationSeconds != nil {
		d = time.Duration(*in.DurationSeconds) * time.Second
	}
	c, err := s.ra.CreateSession(ctx, d)
	if err != nil {
		return nil, err
	}
	return &sts.AssumeRoleOutput{Credentials: &types.Credentials{
		AccessKeyId: aws.String(c.AccessKeyID), SecretAccessKey: aws.String(c.SecretAccessKey),
		SessionToken: aws.String(c.SessionToken), Expiration: aws.Time(c.Expires),
	}}, nil
}

// invalidRequestError is a request the configuration makes impossible.
type invalidRequestError struct{ err error }

func (e *invalidRequestError) Error() string      { return e.err.Error() }
func (e *invalidRequestError) Unwrap() error      { return e.err }
func (e *invalidRequestError) errorClass() string { return ClassInvalidRequest }

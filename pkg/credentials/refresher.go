package credentials

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
)

// Refresh policy. See the package documentation for the reasoning.
const (
	// ServeMargin: a set is withdrawn (Current returns ErrNoCredentials)
	// this long before its real expiry. Five minutes is what EC2 itself
	// promises and the point below which the Go v1, JS v3 and Java v2 SDKs
	// treat credentials as already expired.
	ServeMargin = 5 * time.Minute

	// A new set is fetched when the current one has between refreshLow and
	// refreshHigh of its lifetime left: 30–39 min for 1-hour sessions,
	// 7.5–9.75 min for 15-minute ones. The first refresh after a fetch
	// uses the wider window up to firstRefreshHigh (30–54 min left for
	// 1 h) so that a fleet started at once drifts apart at once.
	refreshLow       = 0.50
	refreshHigh      = 0.65
	firstRefreshHigh = 0.90

	// Transient failures back off exponentially with full jitter,
	// min(transientCap, transientBase·2^(n-1))·U[0,1), at least minDelay.
	transientBase = 2 * time.Second
	transientCap  = 5 * time.Minute
	minDelay      = time.Second
	// Permanent failures back off the same way but with "equal jitter"
	// (U[½,1]·d), starting at a minute, so a fixed trust policy or key is
	// picked up within minutes without hammering STS.
	permanentBase = time.Minute
	permanentCap  = 15 * time.Minute

	// maxWait caps one sleep of Run. Timers run on the monotonic clock,
	// which stops while a VM is paused or the host suspended, but expiry is
	// wall-clock time: waking at least this often re-checks the schedule
	// against the wall clock.
	maxWait = 5 * time.Minute

	defaultFetchAttempts = 4
	defaultCallTimeout   = 30 * time.Second
	maxTokenBytes        = 20000 // STS WebIdentityToken limit
)

// Options are the Refresher's injected dependencies; zero values get
// production defaults.
type Options struct {
	// Logger receives refresh events; nil discards them.
	Logger *slog.Logger
	// Clock defaults to SystemClock.
	Clock Clock
	// Rand drives jitter; nil uses the runtime's random generator.
	Rand rand.Source
	// Observer receives metrics events; nil means NopObserver.
	Observer Observer
	// FetchAttempts bounds Fetch's retries of transient errors (default 4).
	FetchAttempts int
	// CallTimeout bounds one STS call including the SDK's own retries
	// (default 30 s).
	CallTimeout time.Duration
}

// State is a snapshot of the Refresher for metrics and `imds-shim status`.
// It never contains secrets.
type State struct {
	RoleARN     string `json:"role_arn"`
	SessionName string `json:"session_name"`
	// Serving reports whether Current would return credentials now.
	Serving bool `json:"serving"`
	// AccessKeyID identifies the served set (not a secret; it appears in
	// CloudTrail).
	AccessKeyID string `json:"access_key_id,omitempty"`
	// Expires is the STS expiry of the last good set; ServeUntil is
	// Expires - ServeMargin.
	Expires    time.Time `json:"expires,omitzero"`
	ServeUntil time.Time `json:"serve_until,omitzero"`
	// LastRefresh is the last success, LastAttempt the last STS call.
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// NextRefresh is when the next STS call is due.
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// LastError and LastErrorClass describe the most recent failure, kept
	// after a later success; ConsecutiveFailures is 0 when healthy.
	LastError           string    `json:"last_error,omitempty"`
	LastErrorClass      string    `json:"last_error_class,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	// Attempts and Failures count STS calls since start.
	Attempts uint64 `json:"attempts"`
	Failures uint64 `json:"failures"`
}

// served is what Current reads: immutable once published.
type served struct {
	creds      Credentials
	serveUntil time.Time
}

// Refresher keeps one role's credentials fresh. Current is safe for any
// number of concurrent callers and never waits for STS; Fetch and Run are
// the only callers of STS and never overlap.
type Refresher struct {
	cfg      Config
	arn      RoleARN
	duration time.Duration
	client   STSAPI
	log      *slog.Logger
	clock    Clock
	obs      Observer
	attempts int
	timeout  time.Duration

	cur     atomic.Pointer[served]
	lastErr atomic.Pointer[string] // for Current's error message

	callMu sync.Mutex // held for the whole of an STS call: single flight
	rnd    *rand.Rand // guarded by callMu

	mu        sync.Mutex // guards st and withdrawn
	st        State
	withdrawn bool // the "serving no credentials" error was logged
}

// globalSource uses the runtime's goroutine-safe generator.
type globalSource struct{}

func (globalSource) Uint64() uint64 { return rand.Uint64() }

// New checks cfg and returns a Refresher with no credentials yet; call Fetch,
// then Run. An empty SessionName becomes DefaultSessionName(os.Hostname()).
func New(cfg Config, client STSAPI, opts Options) (*Refresher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validating credentials configuration: %w", err)
	}
	if client == nil {
		return nil, errors.New("creating refresher: nil STS client")
	}
	arn, _ := ParseRoleARN(cfg.RoleARN) // checked by Validate
	if cfg.SessionName == "" {
		host, _ := os.Hostname()
		cfg.SessionName = DefaultSessionName(host)
	}
	r := &Refresher{
		cfg:      cfg,
		arn:      arn,
		duration: cfg.Duration,
		client:   client,
		log:      opts.Logger,
		clock:    opts.Clock,
		obs:      opts.Observer,
		attempts: opts.FetchAttempts,
		timeout:  opts.CallTimeout,
	}
	if r.duration == 0 {
		r.duration = DefaultDuration
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.clock == nil {
		r.clock = SystemClock{}
	}
	if r.obs == nil {
		r.obs = NopObserver{}
	}
	if r.attempts <= 0 {
		r.attempts = defaultFetchAttempts
	}
	if r.timeout <= 0 {
		r.timeout = defaultCallTimeout
	}
	src := opts.Rand
	if src == nil {
		src = globalSource{}
	}
	r.rnd = rand.New(src)
	r.st.RoleARN = arn.String()
	r.st.SessionName = cfg.SessionName
	return r, nil
}

// Role returns the parsed role ARN.
func (r *Refresher) Role() RoleARN { return r.arn }

// Current returns the credentials to serve. It reads an atomic pointer and
// never blocks on STS. It returns an error wrapping ErrNoCredentials before
// the first success, and once the last good set is within ServeMargin of
// its expiry; it never returns an expired or empty set.
func (r *Refresher) Current() (Credentials, error) {
	s := r.cur.Load()
	if s == nil {
		return Credentials{}, fmt.Errorf("%w for %s: none obtained yet%s", ErrNoCredentials, r.arn, r.lastErrSuffix())
	}
	if now := r.clock.Now(); !now.Before(s.serveUntil) {
		return Credentials{}, fmt.Errorf("%w for %s: the last set expires at %s, within the %s safety margin%s",
			ErrNoCredentials, r.arn, s.creds.Expires.UTC().Format(time.RFC3339), ServeMargin, r.lastErrSuffix())
	}
	return s.creds, nil
}

func (r *Refresher) lastErrSuffix() string {
	if p := r.lastErr.Load(); p != nil {
		return "; last refresh error: " + *p
	}
	return ""
}

// State returns a snapshot for metrics and status.
func (r *Refresher) State() State {
	r.mu.Lock()
	st := r.st
	r.mu.Unlock()
	if s := r.cur.Load(); s != nil {
		st.Serving = r.clock.Now().Before(s.serveUntil)
	}
	return st
}

// Status implements the daemon's StatusReporter with State.
func (r *Refresher) Status(context.Context) (any, error) { return r.State(), nil }

// Fetch obtains the first set, retrying transient errors up to
// Options.FetchAttempts times with backoff; a permanent error (access
// denied, bad source credentials, malformed policy, …) returns at once. The
// daemon calls it before signalling readiness and decides what a failure
// means. It also schedules Run's next refresh.
func (r *Refresher) Fetch(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := r.refresh(ctx, true)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// Say why it never succeeded, not only that time ran out.
			return fmt.Errorf("fetching credentials for %s: %w (last error: %w)", r.arn, ctx.Err(), err)
		}
		class := classify(err)
		if permanent(class) || attempt >= r.attempts {
			return fmt.Errorf("fetching credentials for %s (%s, attempt %d of %d): %w", r.arn, class, attempt, r.attempts, err)
		}
		if werr := r.waitUntil(ctx, r.State().NextRefresh); werr != nil {
			return fmt.Errorf("fetching credentials for %s: %w (last error: %w)", r.arn, werr, err)
		}
	}
}

// Run refreshes in the background until ctx is cancelled, then returns nil.
// Without a prior successful Fetch it starts with an immediate attempt.
func (r *Refresher) Run(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return nil
		}
		now := r.clock.Now()
		st := r.State()
		wake := st.NextRefresh
		if s := r.cur.Load(); s != nil && !r.isWithdrawn() && s.serveUntil.Before(wake) {
			wake = s.serveUntil // wake to log the withdrawal when it happens
		}
		if wake.After(now) {
			if err := r.waitUntil(ctx, wake); err != nil {
				return nil
			}
		}
		r.noteWithdrawal()
		if !r.clock.Now().Before(r.State().NextRefresh) {
			_ = r.refresh(ctx, false) // logged, counted and scheduled inside
		}
	}
}

// waitUntil sleeps until t or for maxWait, whichever comes first.
func (r *Refresher) waitUntil(ctx context.Context, t time.Time) error {
	d := min(t.Sub(r.clock.Now()), maxWait)
	if d <= 0 {
		return ctx.Err()
	}
	tm := r.clock.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C():
		return nil
	}
}

func (r *Refresher) isWithdrawn() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.withdrawn
}

// noteWithdrawal logs, once per outage, that the last good set has reached
// its margin and nothing is being served.
func (r *Refresher) noteWithdrawal() {
	s := r.cur.Load()
	if s == nil || r.clock.Now().Before(s.serveUntil) {
		return
	}
	r.mu.Lock()
	already := r.withdrawn
	r.withdrawn = true
	st := r.st
	r.mu.Unlock()
	if !already {
		r.log.Error("serving no credentials", "role", r.arn.String(),
			"expires", s.creds.Expires, "margin", ServeMargin,
			"last_error_class", st.LastErrorClass, "last_error", st.LastError,
			"next_refresh", st.NextRefresh)
	}
}

// refresh makes one STS call and publishes or schedules accordingly. Unless
// force is set it does nothing when the refresh is no longer due (another
// caller got there first while this one waited for callMu).
func (r *Refresher) refresh(ctx context.Context, force bool) error {
	r.callMu.Lock()
	defer r.callMu.Unlock()
	start := r.clock.Now()
	if !force && start.Before(r.State().NextRefresh) {
		return nil
	}
	r.mu.Lock()
	r.st.Attempts++
	r.st.LastAttempt = start.Round(0)
	r.mu.Unlock()
	r.obs.RefreshAttempt()

	callCtx, cancel := context.WithTimeout(ctx, r.timeout)
	creds, err := r.call(callCtx)
	cancel()
	end := r.clock.Now()
	r.obs.STSLatency(end.Sub(start))
	// Schedule and compare in wall-clock time, like the STS expiry.
	end = end.Round(0)
	if err == nil {
		err = checkIssued(creds, end)
	}
	if err != nil && ctx.Err() != nil {
		return err // shutting down: not an STS failure
	}
	if err != nil {
		return r.failed(err, end)
	}
	creds.LastUpdated = end
	creds.RoleARN = r.arn.String()
	creds.AccountID = r.arn.AccountID
	s := &served{creds: creds, serveUntil: creds.Expires.Add(-ServeMargin)}
	r.cur.Store(s)

	high := refreshHigh
	r.mu.Lock()
	if r.st.LastRefresh.IsZero() {
		high = firstRefreshHigh
	}
	life := creds.Expires.Sub(end)
	left := time.Duration(float64(life) * (refreshLow + (high-refreshLow)*r.rnd.Float64()))
	next := creds.Expires.Add(-left)
	if next.Before(end.Add(minDelay)) {
		next = end.Add(minDelay)
	}
	recovered := r.withdrawn || r.st.ConsecutiveFailures > 0
	r.st.LastRefresh = end
	r.st.NextRefresh = next
	r.st.Expires = creds.Expires
	r.st.ServeUntil = s.serveUntil
	r.st.AccessKeyID = creds.AccessKeyID
	r.st.ConsecutiveFailures = 0
	r.withdrawn = false
	r.mu.Unlock()
	r.lastErr.Store(nil)
	r.log.Info("credentials refreshed", "role", r.arn.String(), "access_key_id", creds.AccessKeyID,
		"expires", creds.Expires, "next_refresh", next, "latency", end.Sub(start), "recovered", recovered)
	return nil
}

func (r *Refresher) failed(err error, now time.Time) error {
	class := classify(err)
	r.obs.RefreshFailed(class)
	r.mu.Lock()
	r.st.Failures++
	r.st.ConsecutiveFailures++
	n := r.st.ConsecutiveFailures
	delay := r.backoff(class, n)
	r.st.NextRefresh = now.Add(delay)
	r.st.LastError = err.Error()
	r.st.LastErrorClass = class
	r.st.LastErrorAt = now
	r.mu.Unlock()
	msg := err.Error()
	r.lastErr.Store(&msg)

	attrs := []any{"role", r.arn.String(), "class", class, "err", err,
		"consecutive_failures", n, "retry_in", delay}
	if s := r.cur.Load(); s != nil {
		attrs = append(attrs, "serving_until", s.serveUntil)
	}
	if permanent(class) {
		r.log.Error("credentials refresh failed; needs attention", attrs...)
	} else {
		r.log.Warn("credentials refresh failed", attrs...)
	}
	return err
}

// backoff returns the delay before retry n (n ≥ 1) of a class. Caller
// holds callMu (for rnd).
func (r *Refresher) backoff(class string, n int) time.Duration {
	base, limit := transientBase, transientCap
	if permanent(class) {
		base, limit = permanentBase, permanentCap
	}
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2 // stops at the cap long before overflowing
	}
	d = min(d, limit)
	var j time.Duration
	if permanent(class) {
		j = d/2 + time.Duration(r.rnd.Float64()*float64(d/2))
	} else {
		j = time.Duration(r.rnd.Float64() * float64(d))
	}
	return max(j, minDelay)
}

// checkIssued refuses sets that must not be served: an empty field, or an
// expiry already inside the margin (a badly skewed clock).
func checkIssued(c Credentials, now time.Time) error {
	switch {
	case c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "":
		return &invalidResponseError{"STS returned incomplete credentials"}
	case c.Expires.IsZero():
		return &invalidResponseError{"STS returned credentials without an expiry"}
	case !now.Add(ServeMargin).Before(c.Expires):
		return &invalidResponseError{fmt.Sprintf("STS returned credentials expiring at %s, within %s of the local time %s (is the clock wrong?)",
			c.Expires.UTC().Format(time.RFC3339), ServeMargin, now.UTC().Format(time.RFC3339))}
	}
	return nil
}

// call makes the STS request the configuration asks for.
func (r *Refresher) call(ctx context.Context) (Credentials, error) {
	secs := aws.Int32(int32(r.duration / time.Second))
	var policyARNs []types.PolicyDescriptorType
	for _, a := range r.cfg.PolicyARNs {
		policyARNs = append(policyARNs, types.PolicyDescriptorType{Arn: aws.String(a)})
	}
	if r.cfg.WebIdentityTokenFile != "" {
		token, err := readToken(r.cfg.WebIdentityTokenFile)
		if err != nil {
			return Credentials{}, err
		}
		out, err := r.client.AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
			RoleArn:          aws.String(r.cfg.RoleARN),
			RoleSessionName:  aws.String(r.cfg.SessionName),
			WebIdentityToken: aws.String(token),
			DurationSeconds:  secs,
			Policy:           optString(r.cfg.Policy),
			PolicyArns:       policyARNs,
		})
		if err != nil {
			return Credentials{}, fmt.Errorf("calling AssumeRoleWithWebIdentity: %w", err)
		}
		return fromSTS(out.Credentials), nil
	}
	in := &sts.AssumeRoleInput{
		RoleArn:           aws.String(r.cfg.RoleARN),
		RoleSessionName:   aws.String(r.cfg.SessionName),
		DurationSeconds:   secs,
		ExternalId:        optString(r.cfg.ExternalID),
		Policy:            optString(r.cfg.Policy),
		PolicyArns:        policyARNs,
		SourceIdentity:    optString(r.cfg.SourceIdentity),
		TransitiveTagKeys: r.cfg.TransitiveTagKeys,
	}
	for _, k := range sortedKeys(r.cfg.Tags) {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k), Value: aws.String(r.cfg.Tags[k])})
	}
	out, err := r.client.AssumeRole(ctx, in)
	if err != nil {
		return Credentials{}, fmt.Errorf("calling AssumeRole: %w", err)
	}
	return fromSTS(out.Credentials), nil
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func fromSTS(c *types.Credentials) Credentials {
	if c == nil {
		return Credentials{}
	}
	return Credentials{
		AccessKeyID:     aws.ToString(c.AccessKeyId),
		SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken:    aws.ToString(c.SessionToken),
		Expires:         aws.ToTime(c.Expiration),
	}
}

// readToken re-reads the token file on every call: token agents (Vault,
// SPIFFE, Kubernetes) rotate it in place.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &tokenFileError{err}
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", &tokenFileError{err}
	}
	if len(buf) > maxTokenBytes {
		return "", &tokenFileError{fmt.Errorf("%s is longer than %d bytes", path, maxTokenBytes)}
	}
	tok := bytes.TrimSpace(buf)
	if len(tok) < 4 {
		return "", &tokenFileError{fmt.Errorf("%s holds no token", path)}
	}
	return string(tok), nil
}

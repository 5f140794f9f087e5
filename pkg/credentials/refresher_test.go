package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/imds-shim/imds-shim/pkg/internal/syncbuf"
)

const testRole = "arn:aws:iam::123456789012:role/imds/test-role"

type harness struct {
	clock *fakeClock
	sts   *fakeSTS
	obs   *recObserver
	logs  *syncbuf.Buffer
	r     *Refresher
}

func newHarness(t *testing.T, cfg Config, src rand.Source) *harness {
	t.Helper()
	if cfg.RoleARN == "" {
		cfg.RoleARN = testRole
	}
	if cfg.SessionName == "" {
		cfg.SessionName = "host-a"
	}
	h := &harness{clock: newFakeClock(), obs: &recObserver{}, logs: &syncbuf.Buffer{}}
	h.sts = &fakeSTS{clock: h.clock}
	if src == nil {
		src = rand.NewPCG(1, 2)
	}
	r, err := New(cfg, h.sts, Options{
		Logger:   slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:    h.clock,
		Rand:     src,
		Observer: h.obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("refresher log:\n%s", h.logs.String())
		}
	})
	return h
}

// run starts Run and returns a function that cancels it and waits for it
// to return nil.
func (h *harness) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.r.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// fire waits until the code under test waits on a timer, then fires it; it
// returns the time the clock moved to.
func (h *harness) fire(t *testing.T) time.Time {
	t.Helper()
	w := h.clock.waitTimer(t)
	h.clock.Set(w)
	return w
}

// next fires Run's timer and waits until Run has acted on it and waits on
// its next timer, so the test sees the outcome.
func (h *harness) next(t *testing.T) time.Time {
	t.Helper()
	w := h.fire(t)
	h.clock.waitTimer(t)
	return w
}

// untilCalls lets Run sleep and wake until STS has seen n calls in all.
func (h *harness) untilCalls(t *testing.T, n int) {
	t.Helper()
	h.until(t, func() bool { return h.sts.numCalls() >= n })
}

// until lets Run sleep and wake until cond holds, failing after a bounded
// number of wake-ups.
func (h *harness) until(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		h.next(t)
	}
	t.Fatalf("condition still false at %s", h.clock.Now())
}

func apiErr(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " message"}
}

func TestCurrentBeforeFetch(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	_, err := h.r.Current()
	if !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("Current before Fetch: err = %v, want ErrNoCredentials", err)
	}
	if st := h.r.State(); st.Serving || st.Attempts != 0 {
		t.Fatalf("State = %+v, want not serving, no attempts", st)
	}
}

func TestFetchPassesConfigAndServes(t *testing.T) {
	h := newHarness(t, Config{
		SessionName:       "host-a",
		Duration:          2 * time.Hour,
		ExternalID:        "ext-1",
		Policy:            `{"Version":"2012-10-17","Statement":[]}`,
		PolicyARNs:        []string{"arn:aws:iam::aws:policy/ReadOnlyAccess"},
		Tags:              map[string]string{"team": "blue", "env": "prod"},
		TransitiveTagKeys: []string{"team"},
		SourceIdentity:    "alice",
	}, nil)
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := `12:00:00 AssumeRole role=arn:aws:iam::123456789012:role/imds/test-role session=host-a secs=7200 external_id=ext-1 policy={"Version":"2012-10-17","Statement":[]} policy_arns=[arn:aws:iam::aws:policy/ReadOnlyAccess] tags=[env=prod team=blue] transitive=[team] source_identity=alice`
	if diff := cmp.Diff(want, h.sts.log()); diff != "" {
		t.Errorf("STS calls (-want +got):\n%s", diff)
	}
	got, err := h.r.Current()
	if err != nil {
		t.Fatal(err)
	}
	wantCreds := Credentials{
		AccessKeyID: "ASIAFAKE0001", SecretAccessKey: "secret-0001", SessionToken: "token-0001",
		Expires: t0.Add(2 * time.Hour), LastUpdated: t0, RoleARN: testRole, AccountID: "123456789012",
	}
	if diff := cmp.Diff(wantCreds, got); diff != "" {
		t.Errorf("Current (-want +got):\n%s", diff)
	}
	st := h.r.State()
	if !st.Serving || st.Attempts != 1 || st.Failures != 0 || !st.Expires.Equal(t0.Add(2*time.Hour)) ||
		!st.ServeUntil.Equal(t0.Add(2*time.Hour-ServeMargin)) || !st.LastRefresh.Equal(t0) || st.AccessKeyID != "ASIAFAKE0001" {
		t.Errorf("State = %+v", st)
	}
	if diff := cmp.Diff("attempt,latency", h.obs.String()); diff != "" {
		t.Errorf("observer events (-want +got):\n%s", diff)
	}
}

// TestRefreshJitterBounds pins the schedule at both ends of the jitter range
// and checks a few thousand random draws stay inside it.
func TestRefreshJitterBounds(t *testing.T) {
	for _, tc := range []struct {
		duration time.Duration
		// remaining life at the scheduled refresh: first refresh lo..hi,
		// later refreshes lo..laterHi
		lo, hi, laterHi time.Duration
	}{
		{15 * time.Minute, 450 * time.Second, 810 * time.Second, 585 * time.Second},
		{time.Hour, 30 * time.Minute, 54 * time.Minute, 39 * time.Minute},
		{12 * time.Hour, 6 * time.Hour, 648 * time.Minute, 468 * time.Minute},
	} {
		t.Run(tc.duration.String(), func(t *testing.T) {
			for _, end := range []struct {
				name                 string
				src                  rand.Source
				wantFirst, wantLater time.Duration
			}{
				{"low", constSource(0), tc.lo, tc.lo},
				{"high", constSource(^uint64(0)), tc.hi, tc.laterHi},
			} {
				h := newHarness(t, Config{Duration: tc.duration}, end.src)
				if err := h.r.Fetch(t.Context()); err != nil {
					t.Fatal(err)
				}
				st := h.r.State()
				left := st.Expires.Sub(st.NextRefresh).Round(time.Second)
				if left != end.wantFirst {
					t.Errorf("%s: first refresh with %s left, want %s", end.name, left, end.wantFirst)
				}
				stop := h.run(t)
				h.untilCalls(t, 2)
				st = h.r.State()
				left = st.Expires.Sub(st.NextRefresh).Round(time.Second)
				if left != end.wantLater {
					t.Errorf("%s: later refresh with %s left, want %s", end.name, left, end.wantLater)
				}
				stop()
			}
			h := newHarness(t, Config{Duration: tc.duration}, rand.NewPCG(7, 7))
			if err := h.r.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			stop := h.run(t)
			defer stop()
			for i := range 300 {
				st := h.r.State()
				left := st.Expires.Sub(st.NextRefresh)
				hi := tc.laterHi
				if st.Attempts == 1 {
					hi = tc.hi
				}
				if left < tc.lo || left > hi {
					t.Fatalf("refresh scheduled with %s left, want %s..%s", left, tc.lo, hi)
				}
				h.untilCalls(t, i+2)
			}
		})
	}
}

// TestScheduledRefreshKeepsLifeLeft drives a day of 1-hour sessions: every
// set served has at least 30 minutes left while STS answers.
func TestScheduledRefreshKeepsLifeLeft(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	stop := h.run(t)
	defer stop()
	keys := map[string]bool{}
	for h.clock.Now().Before(t0.Add(24 * time.Hour)) {
		w := h.clock.waitTimer(t)
		// Just before the refresh fires: the worst moment.
		h.clock.Set(w.Add(-time.Second))
		c, err := h.r.Current()
		if err != nil {
			t.Fatalf("at %s: %v", h.clock.Now(), err)
		}
		if left := c.Expires.Sub(h.clock.Now()); left < 30*time.Minute {
			t.Fatalf("at %s serving %s with %s left, want >= 30m", h.clock.Now(), c.AccessKeyID, left)
		}
		keys[c.AccessKeyID] = true
		h.clock.Set(w)
	}
	if n := len(keys); n < 24*60/30 || n > 24*60/21+2 {
		t.Errorf("%d refreshes in 24h, want about one per 21–30 min", n)
	}
	if st := h.r.State(); st.Failures != 0 || int(st.Attempts) != h.sts.numCalls() {
		t.Errorf("State = %+v after %d calls", st, h.sts.numCalls())
	}
}

// TestOutageLongerThanLifetime: STS goes away right after the first fetch.
// The set is served until ServeMargin before expiry, then nothing (logged
// once), retries continue with capped backoff, and service resumes with
// the first success.
func TestOutageLongerThanLifetime(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	down := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for range 200 {
		h.sts.push(step{err: down})
	}
	stop := h.run(t)
	defer stop()
	serveUntil := t0.Add(time.Hour - ServeMargin)
	var prev time.Time
	for h.clock.Now().Before(t0.Add(2 * time.Hour)) {
		now := h.next(t)
		if !prev.IsZero() && now.Sub(prev) > transientCap {
			t.Fatalf("gap of %s between wake-ups, want <= %s", now.Sub(prev), transientCap)
		}
		prev = now
		c, err := h.r.Current()
		switch {
		case now.Before(serveUntil) && (err != nil || c.AccessKeyID != "ASIAFAKE0001"):
			t.Fatalf("at %s (before margin): Current = %v, %v; want the first set", now, c, err)
		case !now.Before(serveUntil) && !errors.Is(err, ErrNoCredentials):
			t.Fatalf("at %s (inside margin): Current = %v, %v; want ErrNoCredentials", now, c, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "connection refused") || c != (Credentials{})) {
			t.Fatalf("at %s: Current = %+v, %v; want an empty set and the last STS error", now, c, err)
		}
	}
	if n := strings.Count(h.logs.String(), `msg="serving no credentials"`); n != 1 {
		t.Errorf("logged the withdrawal %d times, want once", n)
	}
	st := h.r.State()
	if st.Serving || st.LastErrorClass != ClassNetwork || st.ConsecutiveFailures < 20 {
		t.Errorf("State after outage = %+v", st)
	}
	// Recovery.
	h.sts.mu.Lock()
	h.sts.script = nil
	h.sts.mu.Unlock()
	for {
		h.next(t)
		if c, err := h.r.Current(); err == nil {
			if c.AccessKeyID != "ASIAFAKE0002" || !c.Expires.Equal(h.clock.Now().Add(time.Hour)) {
				t.Fatalf("after recovery Current = %v", c)
			}
			break
		}
	}
	if st := h.r.State(); !st.Serving || st.ConsecutiveFailures != 0 || st.LastErrorClass != ClassNetwork {
		t.Errorf("State after recovery = %+v", st)
	}
	if !strings.Contains(h.logs.String(), "recovered=true") {
		t.Error("recovery not logged")
	}
}

// TestThrottlingBackoff pins the retry delays at the top of the full-jitter
// range: 2 s doubling to the 5-minute cap, and the class reported.
func TestThrottlingBackoff(t *testing.T) {
	h := newHarness(t, Config{}, constSource(^uint64(0)))
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		h.sts.push(step{err: apiErr("Throttling")})
	}
	refreshAt := h.r.State().NextRefresh
	stop := h.run(t)
	defer stop()
	var delays []string
	for i := range 10 {
		h.untilCalls(t, 2+i)
		delays = append(delays, h.r.State().NextRefresh.Sub(h.clock.Now()).Round(time.Second).String())
	}
	h.untilCalls(t, 12)
	want := "2s 4s 8s 16s 32s 1m4s 2m8s 4m16s 5m0s 5m0s"
	if diff := cmp.Diff(want, strings.Join(delays, " ")); diff != "" {
		t.Errorf("retry delays (-want +got):\n%s", diff)
	}
	if c, err := h.r.Current(); err != nil || c.AccessKeyID != "ASIAFAKE0002" {
		t.Errorf("after throttling: %v, %v", c, err)
	}
	if h.clock.Now().Sub(refreshAt) > 20*time.Minute {
		t.Errorf("throttling delayed the refresh by %s", h.clock.Now().Sub(refreshAt))
	}
	wantEv := "attempt,latency" + strings.Repeat(",attempt,latency,failed throttling", 10) + ",attempt,latency"
	if diff := cmp.Diff(wantEv, h.obs.String()); diff != "" {
		t.Errorf("observer events (-want +got):\n%s", diff)
	}
	if strings.Contains(h.logs.String(), "level=ERROR") {
		t.Error("throttling logged at error level")
	}
}

// TestBackoffFullJitterRange checks the low end: full jitter may retry at
// once, but never faster than minDelay.
func TestBackoffFullJitterRange(t *testing.T) {
	h := newHarness(t, Config{}, constSource(0))
	h.r.callMu.Lock()
	defer h.r.callMu.Unlock()
	for n := 1; n < 40; n++ {
		if d := h.r.backoff(ClassServer, n); d != minDelay {
			t.Fatalf("transient backoff(%d) at jitter 0 = %s, want %s", n, d, minDelay)
		}
		want := min(permanentBase<<min(n-1, 20), permanentCap) / 2
		if d := h.r.backoff(ClassAccessDenied, n); d != want {
			t.Fatalf("permanent backoff(%d) at jitter 0 = %s, want %s", n, d, want)
		}
	}
}

func TestPermanentErrors(t *testing.T) {
	for _, code := range []string{"AccessDenied", "InvalidClientTokenId", "ExpiredToken", "MalformedPolicyDocument",
		"PackedPolicyTooLarge", "RegionDisabledException", "SignatureDoesNotMatch"} {
		t.Run(code, func(t *testing.T) {
			h := newHarness(t, Config{}, constSource(^uint64(0)))
			h.sts.push(step{err: apiErr(code)})
			err := h.r.Fetch(t.Context())
			var api smithy.APIError
			if !errors.As(err, &api) || api.ErrorCode() != code {
				t.Fatalf("Fetch err = %v, want the %s API error", err, code)
			}
			if n := h.sts.numCalls(); n != 1 {
				t.Errorf("Fetch made %d calls for a permanent error, want 1", n)
			}
			st := h.r.State()
			if !permanent(st.LastErrorClass) {
				t.Errorf("class %q is not permanent", st.LastErrorClass)
			}
			if d := st.NextRefresh.Sub(h.clock.Now()).Round(time.Millisecond); d != permanentBase {
				t.Errorf("next attempt in %s, want %s", d, permanentBase)
			}
			if !strings.Contains(h.logs.String(), "level=ERROR") || !strings.Contains(h.logs.String(), "class="+st.LastErrorClass) {
				t.Errorf("permanent error not logged at error level with its class:\n%s", h.logs)
			}
			// Run keeps trying at long intervals and recovers once fixed.
			h.sts.push(step{err: apiErr(code)}, step{err: apiErr(code)})
			stop := h.run(t)
			defer stop()
			var gaps []string
			for i := 0; i < 3; i++ {
				before := h.clock.Now()
				gaps = append(gaps, h.next(t).Sub(before).Round(time.Millisecond).String())
			}
			if diff := cmp.Diff("1m0s 2m0s 4m0s", strings.Join(gaps, " ")); diff != "" {
				t.Errorf("retry gaps (-want +got):\n%s", diff)
			}
			if _, err := h.r.Current(); err != nil {
				t.Errorf("not recovered: %v", err)
			}
		})
	}
}

func TestFetchRetriesTransientErrorsBounded(t *testing.T) {
	t.Run("recovers", func(t *testing.T) {
		h := newHarness(t, Config{}, constSource(^uint64(0)))
		h.sts.push(step{err: apiErr("ServiceUnavailable")}, step{err: apiErr("Throttling")})
		done := make(chan error, 1)
		go func() { done <- h.r.Fetch(t.Context()) }()
		h.fire(t)
		h.fire(t)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := h.sts.numCalls(); n != 3 {
			t.Errorf("%d calls, want 3", n)
		}
		if got := h.clock.Now().Sub(t0).Round(time.Millisecond); got != 6*time.Second {
			t.Errorf("took %s, want 2s+4s", got)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		h := newHarness(t, Config{}, nil)
		for range 10 {
			h.sts.push(step{err: &net.DNSError{Err: "no such host", Name: "sts.us-east-1.amazonaws.com"}})
		}
		done := make(chan error, 1)
		go func() { done <- h.r.Fetch(t.Context()) }()
		for range defaultFetchAttempts - 1 {
			h.fire(t)
		}
		err := <-done
		if err == nil || !strings.Contains(err.Error(), "network, attempt 4 of 4") {
			t.Fatalf("Fetch err = %v, want a network error after 4 attempts", err)
		}
		if _, cerr := h.r.Current(); !errors.Is(cerr, ErrNoCredentials) {
			t.Errorf("Current after failed Fetch: %v", cerr)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		h := newHarness(t, Config{}, nil)
		h.sts.push(step{err: apiErr("InternalFailure")})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- h.r.Fetch(ctx) }()
		h.clock.waitTimer(t)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Fetch err = %v, want context.Canceled", err)
		}
	})
}

func TestInvalidResponsesAreNotServed(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    step
	}{
		{"expires inside margin", step{life: ServeMargin}},
		{"already expired", step{life: -time.Minute}},
		{"empty secret", step{mutate: func(c *types.Credentials) { c.SecretAccessKey = nil }}},
		{"empty token", step{mutate: func(c *types.Credentials) { c.SessionToken = new(string) }}},
		{"no expiry", step{mutate: func(c *types.Credentials) { c.Expiration = nil }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, nil)
			h.sts.push(tc.s)
			done := make(chan error, 1)
			go func() { done <- h.r.Fetch(t.Context()) }()
			// The first try is rejected; the scripted default then succeeds.
			h.fire(t)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if st := h.r.State(); st.LastErrorClass != ClassInvalidResponse || st.Failures != 1 {
				t.Errorf("State = %+v, want one invalid_response failure", st)
			}
			if c, _ := h.r.Current(); c.AccessKeyID != "ASIAFAKE0002" {
				t.Errorf("serving %v, want the second set", c)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	t.Run("while waiting", func(t *testing.T) {
		h := newHarness(t, Config{}, nil)
		if err := h.r.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
		stop := h.run(t)
		h.clock.waitTimer(t)
		stop()
	})
	t.Run("during an STS call", func(t *testing.T) {
		h := newHarness(t, Config{}, nil)
		h.sts.push(step{block: make(chan struct{})}) // never answers
		stop := h.run(t)
		// Run calls at once (no Fetch); wait for the call to be in flight.
		for h.sts.numCalls() == 0 {
			runtimeGosched()
		}
		stop()
		if st := h.r.State(); st.Failures != 0 {
			t.Errorf("cancellation counted as a failure: %+v", st)
		}
	})
}

// TestConcurrentCurrent reads from several goroutines while Run refreshes
// through a day of 15-minute sessions with failures mixed in; under -race.
func TestConcurrentCurrent(t *testing.T) {
	h := newHarness(t, Config{Duration: 15 * time.Minute}, nil)
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 150 {
		if i%3 == 0 {
			h.sts.push(step{err: apiErr("Throttling")})
		} else {
			h.sts.push(step{})
		}
	}
	stop := h.run(t)
	var wg sync.WaitGroup
	quit := make(chan struct{})
	errc := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-quit:
					return
				default:
					runtimeGosched() // let Run progress on 2 cores
				}
				now := h.clock.Now()
				c, err := h.r.Current()
				if err != nil {
					continue
				}
				if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" || !now.Before(c.Expires) {
					errc <- fmt.Errorf("served %+v at %s", c, now)
					return
				}
				_ = h.r.State()
			}
		})
	}
	for range 150 {
		h.next(t)
	}
	close(quit)
	wg.Wait()
	stop()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestSingleFlight(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	release := make(chan struct{})
	h.sts.push(step{block: release}, step{block: release})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if err := h.r.Fetch(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	for h.sts.numCalls() == 0 {
		runtimeGosched()
	}
	close(release)
	wg.Wait()
	if h.sts.maxIn != 1 {
		t.Errorf("%d STS calls were in flight at once, want 1", h.sts.maxIn)
	}
}

func TestWebIdentityTokenReReadEachCall(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(tokFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("jwt-one\n")
	h := newHarness(t, Config{WebIdentityTokenFile: tokFile, Duration: 15 * time.Minute}, constSource(0))
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	write("jwt-two")
	stop := h.run(t)
	defer stop()
	h.untilCalls(t, 2)
	if err := os.Remove(tokFile); err != nil {
		t.Fatal(err)
	}
	h.until(t, func() bool { return h.r.State().Failures > 0 })
	want := strings.Join([]string{
		"12:00:00 AssumeRoleWithWebIdentity role=" + testRole + " session=host-a secs=900 token=jwt-one",
		"12:07:30 AssumeRoleWithWebIdentity role=" + testRole + " session=host-a secs=900 token=jwt-two",
	}, "\n")
	if diff := cmp.Diff(want, h.sts.log()); diff != "" {
		t.Errorf("STS calls (-want +got):\n%s", diff)
	}
	st := h.r.State()
	if st.LastErrorClass != ClassWebIdentity || !strings.Contains(st.LastError, "reading web_identity_token_file") {
		t.Errorf("State after the token file vanished = %+v", st)
	}
	if strings.Contains(h.logs.String(), "jwt-") {
		t.Error("a token appeared in the log")
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	if err := h.r.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	c, _ := h.r.Current()
	h.r.log.Info("probe", "creds", c)
	_ = fmt.Sprintf("%v %+v", c, h.r.State())
	logs := h.logs.String() + fmt.Sprintf("%v %+v", c, h.r.State())
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("secret %q appears in logs or State:\n%s", secret, logs)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{apiErr("Throttling"), ClassThrottling},
		{apiErr("RequestLimitExceeded"), ClassThrottling},
		{apiErr("InternalFailure"), ClassServer},
		{apiErr("IDPCommunicationError"), ClassServer},
		{apiErr("AccessDenied"), ClassAccessDenied},
		{apiErr("InvalidClientTokenId"), ClassSourceCredentials},
		{apiErr("ExpiredToken"), ClassSourceCredentials},
		{apiErr("ExpiredTokenException"), ClassWebIdentity},
		{apiErr("InvalidIdentityToken"), ClassWebIdentity},
		{apiErr("MalformedPolicyDocument"), ClassInvalidRequest},
		{apiErr("RegionDisabledException"), ClassRegionDisabled},
		{fmt.Errorf("calling AssumeRole: %w", &net.OpError{Op: "dial", Err: errors.New("refused")}), ClassNetwork},
		{context.DeadlineExceeded, ClassNetwork},
		{&SourceCredentialsError{Err: errors.New("no keys")}, ClassSourceCredentials},
		{errIMDSRefused, ClassSourceCredentials},
		{&tokenFileError{os.ErrNotExist}, ClassWebIdentity},
		{&invalidResponseError{"x"}, ClassInvalidResponse},
		{errors.New("mystery"), ClassUnknown},
		{apiErr("SomethingNew"), ClassUnknown},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

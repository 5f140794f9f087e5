package credentials

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// fakeClock is a manual clock. Timers fire only in Advance/Set, and
// waitTimer lets a test block (without sleeping) until the code under test
// is waiting on one.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever a timer is added
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0, changed: make(chan struct{})} }

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	ch   chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	return true
}

// Set moves the clock to when (never backwards) and fires due timers.
func (c *fakeClock) Set(when time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if when.After(c.now) {
		c.now = when
	}
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.when.After(c.now) {
			t.ch <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.timers = kept
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// waitTimer blocks until a timer is pending and returns the earliest
// deadline. The real-time bound only turns a hang into a failure.
func (c *fakeClock) waitTimer(t *testing.T) time.Time {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		if len(c.timers) > 0 {
			w := c.timers[0].when
			for _, tm := range c.timers[1:] {
				if tm.when.Before(w) {
					w = tm.when
				}
			}
			c.mu.Unlock()
			return w
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("no timer was set within 10s (code under test is stuck)")
		}
	}
}

// step is one scripted STS answer.
type step struct {
	err  error
	life time.Duration // 0: the requested DurationSeconds
	// mutate changes the issued set (to test response checks).
	mutate func(*types.Credentials)
	// block, when set, makes the call wait for it (or ctx).
	block chan struct{}
}

// fakeSTS is a stateful STS: it issues numbered credentials that expire
// after the requested duration on the fake clock, follows a script of
// answers before falling back to success, and records every call as text.
type fakeSTS struct {
	clock *fakeClock

	mu       sync.Mutex
	script   []step
	calls    []string
	issued   int
	inflight int
	maxIn    int
}

func (f *fakeSTS) push(steps ...step) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append(f.script, steps...)
}

func (f *fakeSTS) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, "\n")
}

func (f *fakeSTS) numCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeSTS) begin(call string) step {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	f.inflight++
	f.maxIn = max(f.maxIn, f.inflight)
	var s step
	if len(f.script) > 0 {
		s, f.script = f.script[0], f.script[1:]
	}
	return s
}

func (f *fakeSTS) end(ctx context.Context, s step, secs int32) (*types.Credentials, error) {
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	life := s.life
	if life == 0 {
		life = time.Duration(secs) * time.Second
	}
	f.mu.Lock()
	f.issued++
	n := f.issued
	f.mu.Unlock()
	c := &types.Credentials{
		AccessKeyId:     aws.String(fmt.Sprintf("ASIAFAKE%04d", n)),
		SecretAccessKey: aws.String(fmt.Sprintf("secret-%04d", n)),
		SessionToken:    aws.String(fmt.Sprintf("token-%04d", n)),
		Expiration:      aws.Time(f.clock.Now().Add(life)),
	}
	if s.mutate != nil {
		s.mutate(c)
	}
	return c, nil
}

func (f *fakeSTS) AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, _ ...func(*sts.Options)) (*sts.AssumeRoleOutput, error) {
	var tags, pols []string
	for _, t := range in.Tags {
		tags = append(tags, aws.ToString(t.Key)+"="+aws.ToString(t.Value))
	}
	for _, p := range in.PolicyArns {
		pols = append(pols, aws.ToString(p.Arn))
	}
	call := fmt.Sprintf("%s AssumeRole role=%s session=%s secs=%d external_id=%s policy=%s policy_arns=%v tags=%v transitive=%v source_identity=%s",
		f.clock.Now().Format("15:04:05"), aws.ToString(in.RoleArn), aws.ToString(in.RoleSessionName), aws.ToInt32(in.DurationSeconds),
		aws.ToString(in.ExternalId), aws.ToString(in.Policy), pols, tags, in.TransitiveTagKeys, aws.ToString(in.SourceIdentity))
	s := f.begin(call)
	c, err := f.end(ctx, s, aws.ToInt32(in.DurationSeconds))
	if err != nil {
		return nil, err
	}
	return &sts.AssumeRoleOutput{Credentials: c}, nil
}

func (f *fakeSTS) AssumeRoleWithWebIdentity(ctx context.Context, in *sts.AssumeRoleWithWebIdentityInput, _ ...func(*sts.Options)) (*sts.AssumeRoleWithWebIdentityOutput, error) {
	call := fmt.Sprintf("%s AssumeRoleWithWebIdentity role=%s session=%s secs=%d token=%s",
		f.clock.Now().Format("15:04:05"), aws.ToString(in.RoleArn), aws.ToString(in.RoleSessionName),
		aws.ToInt32(in.DurationSeconds), aws.ToString(in.WebIdentityToken))
	s := f.begin(call)
	c, err := f.end(ctx, s, aws.ToInt32(in.DurationSeconds))
	if err != nil {
		return nil, err
	}
	return &sts.AssumeRoleWithWebIdentityOutput{Credentials: c}, nil
}

// recObserver records Observer events as text.
type recObserver struct {
	mu     sync.Mutex
	events []string
}

func (o *recObserver) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, s)
}
func (o *recObserver) RefreshAttempt()            { o.add("attempt") }
func (o *recObserver) RefreshFailed(class string) { o.add("failed " + class) }
func (o *recObserver) STSLatency(time.Duration)   { o.add("latency") }
func (o *recObserver) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.events, ",")
}

// constSource makes every jitter draw the same: 0 gives the low end of a
// range, ^uint64(0) the high end.
type constSource uint64

func (s constSource) Uint64() uint64 { return uint64(s) }

func runtimeGosched() { runtime.Gosched() }

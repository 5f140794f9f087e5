package credentials

import "time"

// Clock is the Refresher's source of time; tests inject a fake one so that
// hours of refresh schedule run without sleeping.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the Refresher uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

// Observer receives refresh events for metrics. Calls are synchronous and
// come from the refreshing goroutine; implementations must be quick.
type Observer interface {
	// RefreshAttempt is called before each STS call.
	RefreshAttempt()
	// RefreshFailed is called after a failed call with its class (Class*).
	RefreshFailed(class string)
	// STSLatency is called after each call, failed or not.
	STSLatency(d time.Duration)
}

// NopObserver ignores every event.
type NopObserver struct{}

func (NopObserver) RefreshAttempt()            {}
func (NopObserver) RefreshFailed(string)       {}
func (NopObserver) STSLatency(d time.Duration) {}

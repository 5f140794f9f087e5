package daemon

import (
	"time"

	sdd "github.com/coreos/go-systemd/v22/daemon"
)

// SystemdNotifier sends states to $NOTIFY_SOCKET; without it (not started by
// systemd) every call is a no-op.
type SystemdNotifier struct{}

// Notify implements Notifier.
func (SystemdNotifier) Notify(state string) error {
	_, err := sdd.SdNotify(false, state)
	return err
}

// WatchdogInterval is half of systemd's WATCHDOG_USEC, or 0 when the unit
// has no watchdog.
func WatchdogInterval() time.Duration {
	d, err := sdd.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

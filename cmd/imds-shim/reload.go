package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"syscall"
	"time"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// reloadPoll is how often `reload` asks the daemon whether it has finished.
const reloadPoll = 50 * time.Millisecond

// signalProcess sends SIGHUP to the daemon; a variable for tests.
var signalProcess = func(pid int) error { return syscall.Kill(pid, syscall.SIGHUP) }

// cmdReload asks the running daemon to re-read its configuration and waits
// until it has applied or rejected it, so that `systemctl reload` (the
// unit's ExecReload) returns only once the new configuration serves, and
// fails when it was rejected. A plain SIGHUP returns at once: systemd 252
// may report the reload done before the daemon has even said RELOADING=1.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("reload", "reload [--timeout D]", stderr)
	sock := fs.String("socket", filepath.Join(runtimeDir(), "control.sock"), "control socket `path`")
	timeout := fs.Duration("timeout", 90*time.Second, "how long to wait for the daemon to apply or reject the configuration")
	if code, ok := parse(fs, args, stdout); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	before, _, err := daemon.ReadStatus(ctx, *sock)
	if err != nil {
		fmt.Fprintf(stderr, "imds-shim reload: %v\n", err)
		return daemon.ExitFailure
	}
	if err := signalProcess(before.PID); err != nil {
		fmt.Fprintf(stderr, "imds-shim reload: signalling pid %d: %v\n", before.PID, err)
		return daemon.ExitFailure
	}
	tick := time.NewTicker(reloadPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "imds-shim reload: the daemon (pid %d) did not finish reloading within %s\n", before.PID, *timeout)
			return daemon.ExitFailure
		case <-tick.C:
		}
		st, _, err := daemon.ReadStatus(ctx, *sock)
		if err != nil {
			continue // busy or restarting; the deadline decides
		}
		if st.PID != before.PID {
			fmt.Fprintf(stderr, "imds-shim reload: the daemon restarted (pid %d, was %d) instead of reloading\n", st.PID, before.PID)
			return daemon.ExitFailure
		}
		if st.ReloadAttempts <= before.ReloadAttempts {
			continue
		}
		if st.LastReloadError != "" {
			fmt.Fprintf(stderr, "imds-shim reload: rejected; the previous configuration keeps running: %s\n", st.LastReloadError)
			return daemon.ExitConfig
		}
		fmt.Fprintf(stdout, "reloaded %s\n", st.Config)
		return 0
	}
}

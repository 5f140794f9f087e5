package daemon

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestNotifySequence listens on a NOTIFY_SOCKET datagram socket, as systemd
// does, and checks the exact sequence a start, a watchdog period, a reload
// and a stop produce.
func TestNotifySequence(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(prefix string) []string {
		t.Helper()
		var seen []string
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				seen = append(seen, m)
				if strings.HasPrefix(m, prefix) {
					return seen
				}
			case <-timeout:
				t.Fatalf("no %q within 10s; saw %q", prefix, seen)
			}
		}
	}

	w := newWorld(t)
	path := filepath.Join(dir, "c.yaml")
	writeConfig(t, path, "app", "")
	deps := w.deps(dir)
	deps.Notifier = SystemdNotifier{}
	deps.Watchdog = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan Reload)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, path, deps, reload) }()

	var got []string
	got = append(got, next("READY=1")...)
	got = append(got, next("WATCHDOG=1")...)
	writeConfig(t, path, "other", "")
	reload <- Reload{}
	got = append(got, next("READY=1")...)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got = append(got, next("STOPPING=1")...)

	// Normalise what varies between runs, and drop the extra watchdog
	// pings the timer may fit in.
	mono := regexp.MustCompile(`MONOTONIC_USEC=\d+`)
	var norm []string
	for _, m := range got {
		m = mono.ReplaceAllString(m, "MONOTONIC_USEC=N")
		m = strings.ReplaceAll(m, path, "CONFIG")
		if m == "WATCHDOG=1" && len(norm) > 0 && norm[len(norm)-1] == m {
			continue
		}
		norm = append(norm, m)
	}
	want := []string{
		"STATUS=loading CONFIG",
		"STATUS=removing leftovers of an earlier run",
		"STATUS=fetching first credentials for arn:aws:iam::123456789012:role/app",
		"STATUS=setting up 169.254.169.254",
		"READY=1\nSTATUS=serving app; credentials expire 2030-01-01T00:00:00Z",
		"WATCHDOG=1",
		"RELOADING=1\nMONOTONIC_USEC=N\nSTATUS=reloading CONFIG",
		"READY=1\nSTATUS=serving other; credentials expire 2030-01-01T00:00:00Z",
		"STOPPING=1\nSTATUS=stopping",
	}
	// Watchdog pings between the reload and the stop are allowed.
	var trimmed []string
	for i, m := range norm {
		if m == "WATCHDOG=1" && i > 5 {
			continue
		}
		trimmed = append(trimmed, m)
	}
	if d := cmp.Diff(want, trimmed); d != "" {
		t.Errorf("sd_notify sequence (-want +got):\n%s", d)
	}
}

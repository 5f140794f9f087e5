package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// fakeDaemon answers status on a control socket; a SIGHUP (through
// signalProcess) finishes one reload, applied or rejected as told.
type fakeDaemon struct {
	mu     sync.Mutex
	st     daemon.Status
	reject string // the error of the next reload; "" applies it
	hups   int
}

func (f *fakeDaemon) hup(pid int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid != f.st.PID {
		return nil // the wrong process: nothing happens
	}
	f.hups++
	f.st.ReloadAttempts++
	if f.st.LastReloadError = f.reject; f.reject == "" {
		f.st.Reloads++
	}
	return nil
}

func startFakeDaemon(t *testing.T, f *fakeDaemon) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(f.st)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	old := signalProcess
	signalProcess = f.hup
	t.Cleanup(func() { signalProcess = old })
	return sock
}

func TestReloadWaitsForTheOutcome(t *testing.T) {
	f := &fakeDaemon{st: daemon.Status{PID: 4242, Config: "/etc/imds-shim/imds-shim.yaml", ReloadAttempts: 3, Reloads: 2}}
	sock := startFakeDaemon(t, f)

	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "--socket", sock}, &out, &errOut); code != 0 {
		t.Fatalf("applied reload: exit %d, stderr %q", code, errOut.String())
	}
	if f.hups != 1 || !strings.Contains(out.String(), "reloaded /etc/imds-shim/imds-shim.yaml") {
		t.Errorf("applied reload: %d SIGHUPs, stdout %q", f.hups, out.String())
	}

	f.reject = "config /etc/imds-shim/imds-shim.yaml: imds.listen: bad"
	out.Reset()
	errOut.Reset()
	if code := run([]string{"reload", "--socket", sock}, &out, &errOut); code != daemon.ExitConfig {
		t.Fatalf("rejected reload: exit %d, want %d (stderr %q)", code, daemon.ExitConfig, errOut.String())
	}
	if !strings.Contains(errOut.String(), "imds.listen: bad") {
		t.Errorf("rejected reload does not say why: %q", errOut.String())
	}
}

func TestReloadTimesOutWhenNothingHappens(t *testing.T) {
	f := &fakeDaemon{st: daemon.Status{PID: 4242}}
	sock := startFakeDaemon(t, f)
	signalProcess = func(int) error { return nil } // the daemon never reloads
	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "--socket", sock, "--timeout", "200ms"}, &out, &errOut); code != daemon.ExitFailure {
		t.Fatalf("exit %d, want %d", code, daemon.ExitFailure)
	}
	if !strings.Contains(errOut.String(), "did not finish reloading") {
		t.Errorf("stderr %q", errOut.String())
	}
}

func TestReloadWithoutDaemon(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &out, &errOut); code != daemon.ExitFailure {
		t.Fatalf("exit %d, want %d", code, daemon.ExitFailure)
	}
}

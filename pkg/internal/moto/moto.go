package moto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrUnavailable means python3 or the moto module is not installed.
var ErrUnavailable = errors.New("moto is not available (want python3 with the moto package, python3 -m moto.server)")

// readyTimeout bounds the wait for a cold start (3.7 s measured cold, 0.7 s
// warm) on a loaded 2-core machine.
const readyTimeout = 60 * time.Second

// Process is a running moto server.
type Process struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:40123.
	URL string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has been reaped
	stopOnce sync.Once
	output   *lockedBuffer
}

// StartProcess starts moto listening on host (an IP address, e.g. 127.0.0.1)
// and a free port, and returns once it answers HTTP. The server's output goes
// to logw when it is not nil. It returns an error wrapping ErrUnavailable when
// python3 or moto is missing. Call Stop to end it.
func StartProcess(ctx context.Context, host string, logw io.Writer) (*Process, error) {
	python, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("looking up python3: %w", errors.Join(ErrUnavailable, err))
	}
	// The free port can be taken by someone else between Close and moto's
	// bind; moto then exits at once and another port is tried.
	var lastErr error
	for range 3 {
		port, err := freePort(host)
		if err != nil {
			return nil, err
		}
		p, err := start(ctx, python, host, port, logw)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(ctx context.Context, python, host string, port int, logw io.Writer) (*Process, error) {
	out := &lockedBuffer{tee: logw}
	cmd := exec.Command(python, "-m", "moto.server", "-H", host, "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting moto: %w", err)
	}
	p := &Process{
		URL:    "http://" + net.JoinHostPort(host, strconv.Itoa(port)),
		cmd:    cmd,
		exited: make(chan struct{}),
		output: out,
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// waitReady polls the server until it answers. Polling is the only option
// for an external process that has no readiness signal.
func (p *Process) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/moto-api/", nil)
		if err != nil {
			return fmt.Errorf("building readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			msg := strings.TrimSpace(p.output.String())
			if strings.Contains(msg, "No module named") {
				return fmt.Errorf("starting moto: %w: %s", ErrUnavailable, lastLine(msg))
			}
			return fmt.Errorf("starting moto on %s: process exited: %s", p.URL, lastLine(msg))
		case <-ctx.Done():
			return fmt.Errorf("waiting for moto on %s: %w", p.URL, ctx.Err())
		case <-tick.C:
		}
	}
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Reset clears all of the server's state (POST /moto-api/reset).
func (p *Process) Reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/moto-api/reset", nil)
	if err != nil {
		return fmt.Errorf("building reset request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("resetting moto: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("resetting moto: status %s", resp.Status)
	}
	return nil
}

// Stop kills the server's whole process group (moto may fork reloaders) and
// waits until the process has been reaped. It is safe to call more than once.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	})
}

// Output returns what the server has printed so far (its request log).
func (p *Process) Output() string { return p.output.String() }

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	tee io.Writer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tee != nil {
		_, _ = b.tee.Write(p)
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

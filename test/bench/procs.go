package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the harness started and must end.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, set before exited closes
}

// procs tracks every child so that a failing run still ends them all.
type procs struct {
	mu   sync.Mutex
	list []*proc
	// serverCPUs pins the servers startAnnounced starts (see pinned).
	serverCPUs string
}

func (ps *procs) start(name string, cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll sends SIGTERM to every child still running (the daemon then
// tears its network down) and SIGKILL to any that outlive a grace period.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		p.stop(5 * time.Second)
	}
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// startAnnounced starts one of this binary's own servers and returns the
// address it printed on its first line of output.
func (ps *procs) startAnnounced(self, name string, args ...string) (*proc, string, error) {
	cmd := pinned(ps.serverCPUs, self, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = os.Stderr
	p, err := ps.start(name, cmd)
	if err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "LISTENING ")
	if err != nil || !ok {
		p.stop(time.Second)
		return nil, "", fmt.Errorf("starting %s: no address announced (%q, %v)", name, line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return p, addr, nil
}

// pinned returns a command for name and args that runs on the given CPUs
// (a taskset list such as "1"), or anywhere when cpus is empty. taskset
// execs the program, so the process ID is the program's.
func pinned(cpus, name string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
}

// freePort returns a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startMoto starts the moto STS emulator on 127.0.0.1 and waits until it
// answers.
func (ps *procs) startMoto(logw io.Writer) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = logw, logw
	p, err := ps.start("moto", cmd)
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/moto-api/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, nil
			}
		}
		select {
		case <-p.exited:
			return "", errors.New("starting moto: it exited (is python3 -m moto installed?)")
		case <-ctx.Done():
			return "", errors.New("starting moto: no answer within 60s")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// vmKB reads a Vm* field (VmRSS, VmHWM) of a process, in KiB.
func vmKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	return -1
}

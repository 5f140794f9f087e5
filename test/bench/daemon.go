package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// daemonEnv is what every imds-shim start in one run shares.
type daemonEnv struct {
	bin, runtimeDir, logPath string
	// config is the production default: imds.listen left out, so the
	// daemon listens on 169.254.169.254:254 behind its own DNAT from :80.
	// rolesConfig is the same with a roles table and no top-level role.
	config, rolesConfig string
	notify              *net.UnixConn
	notifyPath          string
}

// Role names the roles configuration serves: two entries that the harness
// does not match (a unit; uid and gid 65534) in front of the one it does
// (its own uid), so that every request walks the table to its third entry.
const (
	rolesUnitRole  = "bench-unit"
	rolesOtherRole = "bench-nobo"
	rolesUserRole  = "bench-user" // as long as benchRole: same document size
)

func newDaemonEnv(bin, dir, motoURL string, metrics int) (*daemonEnv, error) {
	creds := filepath.Join(dir, "credentials")
	// moto accepts any keys; these only satisfy the SDK's credential chain.
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = AKIABENCHBENCHBENCH0\naws_secret_access_key = bench-secret\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing source credentials: %w", err)
	}
	common := fmt.Sprintf(`region: us-east-1
sts_endpoint: %s
credentials_file: %s
duration: 1h
metrics:
  listen: 127.0.0.1:%d
network:
  manage: true
`, motoURL, creds, metrics)
	plain := fmt.Sprintf("role_arn: %s\n", benchRoleARN) + common
	roles := common + fmt.Sprintf(`roles:
  - role_arn: %s
    units: [imds-shim-bench-nothing.service]
  - role_arn: %s
    users: ["65534"]
    groups: ["65534"]
  - role_arn: %s
    users: ["%d"]
`, roleARN(rolesUnitRole), roleARN(rolesOtherRole), roleARN(rolesUserRole), os.Geteuid())
	e := &daemonEnv{bin: bin, config: filepath.Join(dir, "imds-shim.yaml"), rolesConfig: filepath.Join(dir, "imds-shim-roles.yaml"),
		runtimeDir: filepath.Join(dir, "run"), logPath: filepath.Join(dir, "daemon.log")}
	for path, cfg := range map[string]string{e.config: plain, e.rolesConfig: roles} {
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, fmt.Errorf("writing daemon config: %w", err)
		}
	}
	e.notifyPath = filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: e.notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listening on the notify socket: %w", err)
	}
	e.notify = conn
	return e, nil
}

func roleARN(name string) string { return "arn:aws:iam::123456789012:role/" + name }

// start runs imds-shim serve with config, on cpus if not empty, and returns
// once it has sent READY=1, with the time from exec to that message.
func (e *daemonEnv) start(ps *procs, cpus, config string) (*proc, time.Duration, error) {
	logf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("opening daemon log: %w", err)
	}
	defer logf.Close()
	cmd := pinned(cpus, e.bin, "serve", "-c", config, "--runtime-dir", e.runtimeDir)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+e.notifyPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	p, err := ps.start("imds-shim", cmd)
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, 4096)
	deadline := t0.Add(60 * time.Second)
	for {
		_ = e.notify.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := e.notify.ReadFromUnix(buf)
		if err == nil {
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					return p, time.Since(t0), nil
				}
			}
			continue
		}
		if !p.running() {
			return nil, 0, fmt.Errorf("imds-shim -c %s exited before READY=1 (%v); its log ends:\n%s", config, p.err, e.logTail(20))
		}
		if time.Now().After(deadline) {
			p.stop(5 * time.Second)
			return nil, 0, fmt.Errorf("imds-shim sent no READY=1 within 60s; see %s", e.logPath)
		}
	}
}

// logTail is the last n lines of the daemon's log, which the harness's
// temporary folder takes with it when it fails.
func (e *daemonEnv) logTail(n int) string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stop sends SIGTERM and returns the time until the process has exited,
// and whether it exited cleanly with the network torn down.
func stopDaemon(p *proc) (time.Duration, error) {
	t0 := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("signalling imds-shim: %w", err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return 0, errors.New("imds-shim did not exit within 30s of SIGTERM")
	}
	d := time.Since(t0)
	if p.err != nil {
		return d, fmt.Errorf("imds-shim exited with %v", p.err)
	}
	return d, networkLeftovers()
}

// networkLeftovers reports what the daemon left in the namespace: the
// endpoint address, its dummy link, or rules in chains it owns.
func networkLeftovers() error {
	var left []string
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		if ifi.Name == "imds0" {
			left = append(left, "link imds0")
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if strings.HasPrefix(a.String(), "169.254.169.254/") {
				left = append(left, "169.254.169.254 on "+ifi.Name)
			}
		}
	}
	for _, save := range []string{"iptables-save", "iptables-legacy-save"} {
		if _, err := exec.LookPath(save); err != nil {
			continue
		}
		out, _ := exec.Command(save).Output()
		if strings.Contains(string(out), "IMDS-SHIM") {
			left = append(left, "IMDS-SHIM rules in "+save)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	return nil
}

// redirectInstalled reports whether the daemon's address is in place.
func redirectInstalled() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), "169.254.169.254/") {
			return true
		}
	}
	return false
}

// startPhases reads, from the daemon's own log, how long each start's
// first AssumeRole and network setup took: the parts of exec-to-READY
// that are not the process's own start.
func startPhases(logPath string) (fetch, network []time.Duration) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, `msg="credentials refreshed"`):
			if m := latencyRE.FindStringSubmatch(line); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					fetch = append(fetch, d)
				}
			}
		case strings.Contains(line, `msg="redirect set up"`):
			if m := durationRE.FindStringSubmatch(line); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					network = append(network, d)
				}
			}
		}
	}
	return fetch, network
}

var (
	latencyRE  = regexp.MustCompile(` latency=(\S+)`)
	durationRE = regexp.MustCompile(` duration=(\S+)`)
)

// The addresses at which the harness's own DNAT (see dnat) reaches the
// ceiling and the floor: loopback addresses, port 80, as 169.254.169.254:80
// reaches the daemon.
const (
	natCeiling = "127.0.0.2"
	natFloor   = "127.0.0.3"
	natFloorGC = "127.0.0.4"
)

// dnat sends TCP port 80 of each address in to its server's address, with
// a nat OUTPUT DNAT rule like the daemon's, so that the ceiling and the floor
// pay for the kernel's NAT on every packet as the daemon's clients do. It
// returns a function that removes the rules.
func dnat(to map[string]string) (func(), error) {
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	var added [][]string
	undo := func() {
		for _, r := range added {
			_ = ipt.Delete("nat", "OUTPUT", r...)
		}
	}
	for _, from := range slices.Sorted(maps.Keys(to)) {
		r := []string{"-d", from + "/32", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", to[from]}
		if err := ipt.Append("nat", "OUTPUT", r...); err != nil {
			undo()
			return nil, fmt.Errorf("adding the bench's DNAT for %s: %w", from, err)
		}
		added = append(added, r)
	}
	return undo, nil
}

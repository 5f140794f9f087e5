package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// envHostNetns names the host's network namespace; bench.sh sets it before
// entering a private one, and run refuses to start without having moved.
const envHostNetns = "IMDS_SHIM_BENCH_HOST_NETNS"

// target is one server under load in the throughput rounds.
type target struct {
	name, url string
	env       []string
}

// results is everything one run measured.
type results struct {
	machine    machine
	opts       wrkOpts
	rounds     int
	targets    []string
	byTarget   map[string][]wrkResult
	docBytes   int
	rotation   checkResult
	rotEvery   time.Duration
	footprint  []rssPoint
	ready      []time.Duration
	stops      []time.Duration
	stopErrs   []string
	loadedStop time.Duration
	micro      []microResult
	microProf  string
	problems   []string
}

type rssPoint struct {
	label          string
	requests, puts int64
	errs, bad      int64
	rssKB, hwmKB   int64
	seconds        float64
}

func runMain(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	bin := fs.String("bin", "bin/imds-shim", "imds-shim binary")
	imdsTest := fs.String("imds-test", "", "pkg/imds test binary (go test -c) for the micro-benchmarks")
	imdsDir := fs.String("imds-dir", "pkg/imds", "pkg/imds source folder (the test binary's working directory)")
	lua := fs.String("lua", "test/bench/imds.lua", "wrk script")
	out := fs.String("out", "test/bench/RESULTS.md", "where to write the results")
	rounds := fs.Int("rounds", 3, "alternating rounds over all targets")
	dur := fs.Duration("duration", 5*time.Second, "length of each wrk run")
	conns := fs.Int("c", 32, "wrk connections")
	threads := fs.Int("t", 1, "wrk threads")
	cycles := fs.Int("cycles", 5, "start/stop cycles for the lifecycle figures")
	footReq := fs.Int64("footprint-requests", 1_000_000, "requests in the footprint phase")
	footTok := fs.Int64("footprint-tokens", 100_000, "distinct tokens in the footprint phase")
	rotDur := fs.Duration("rotation", 10*time.Second, "length of the rotation-under-load phase")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, cur := os.Getenv(envHostNetns), netnsID()
	if host == "" || cur == "" || cur == host {
		return errors.New("run must be started by test/bench/bench.sh, inside a private network namespace")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, p := range []*string{bin, imdsTest, imdsDir, lua, out} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return err
			}
		}
	}
	dir, err := os.MkdirTemp("", "imds-shim-bench.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ps := &procs{}
	defer ps.stopAll()

	r := &results{machine: describeMachine(*bin), opts: wrkOpts{lua: *lua, threads: *threads, conns: *conns, duration: *dur},
		rounds: *rounds, byTarget: map[string][]wrkResult{}, rotEvery: time.Second}
	step := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}

	step("starting the moto STS emulator")
	motoLog, err := os.Create(filepath.Join(dir, "moto.log"))
	if err != nil {
		return err
	}
	defer motoLog.Close()
	motoURL, err := ps.startMoto(motoLog)
	if err != nil {
		return err
	}
	listen, err := freePort()
	if err != nil {
		return err
	}
	metrics, err := freePort()
	if err != nil {
		return err
	}
	denv, err := newDaemonEnv(*bin, dir, motoURL, listen, metrics)
	if err != nil {
		return err
	}
	defer denv.notify.Close()
	// Print the daemon's log if anything goes wrong from here on.
	defer func() {
		if len(r.problems) > 0 {
			if b, err := os.ReadFile(denv.logPath); err == nil {
				fmt.Fprintf(os.Stderr, "--- daemon log ---\n%s", b)
			}
		}
	}()

	step("lifecycle: %d start/stop cycles against moto", *cycles)
	for range *cycles {
		p, ready, err := denv.start(ps)
		if err != nil {
			return err
		}
		r.ready = append(r.ready, ready)
		if !redirectInstalled() {
			r.problems = append(r.problems, "169.254.169.254 not installed after READY=1")
		}
		d, err := stopDaemon(p)
		r.stops = append(r.stops, d)
		if err != nil {
			r.stopErrs = append(r.stopErrs, err.Error())
		}
	}

	step("starting the daemon for the load phases")
	daemon, ready, err := denv.start(ps)
	if err != nil {
		return err
	}
	r.ready = append(r.ready, ready)
	pid := daemon.cmd.Process.Pid
	r.footprint = append(r.footprint, rssPoint{label: "after READY=1", rssKB: vmKB(pid, "VmRSS"), hwmKB: vmKB(pid, "VmHWM")})

	direct := fmt.Sprintf("127.0.0.1:%d", listen)
	token, doc, err := fetchDoc(direct)
	if err != nil {
		return err
	}
	r.docBytes = len(doc)

	_, ceilAddr, err := ps.startAnnounced(self, "ceiling", "ceiling", "-size", fmt.Sprint(len(doc)))
	if err != nil {
		return err
	}
	credPath := "/latest/meta-data/iam/security-credentials/" + benchRole
	tok := "IMDS_TOKEN=" + token
	targets := []target{
		{"ceiling (net/http, fixed body)", "http://" + ceilAddr + credPath, []string{tok}},
		{"imds-shim credentials GET", "http://" + direct + credPath, []string{tok}},
		{"imds-shim token PUT", "http://" + direct + "/latest/api/token", []string{"IMDS_MODE=put"}},
		{"imds-shim credentials GET via 169.254.169.254 DNAT", "http://169.254.169.254" + credPath, []string{tok}},
	}
	for _, t := range targets {
		r.targets = append(r.targets, t.name)
	}
	for round := range *rounds {
		for i := range targets {
			t := targets[(i+round)%len(targets)]
			step("round %d/%d: %s", round+1, *rounds, t.name)
			w, err := runWrk(r.opts, t.url, t.env...)
			if err != nil {
				return err
			}
			r.byTarget[t.name] = append(r.byTarget[t.name], w)
		}
	}
	r.footprint = append(r.footprint, rssPoint{label: "after the throughput rounds", rssKB: vmKB(pid, "VmRSS"), hwmKB: vmKB(pid, "VmHWM")})

	step("rotation under load: credentials rotating every %v for %v", r.rotEvery, *rotDur)
	rot, rotAddr, err := ps.startAnnounced(self, "rotating", "rotating", "-every", r.rotEvery.String(), "-life", "3s")
	if err != nil {
		return err
	}
	r.rotation, err = runCheck(self, "-addr", rotAddr, "-role", benchRole, "-c", "8",
		"-duration", rotDur.String(), "-every", "1000")
	rot.stop(5 * time.Second)
	if err != nil {
		return err
	}

	const chunks = 4
	step("footprint: %d requests with %d distinct tokens in %d chunks", *footReq, *footTok, chunks)
	every := max(*footReq / *footTok, 1)
	for i := range chunks {
		c, err := runCheck(self, "-addr", direct, "-role", benchRole, "-c", "8",
			"-requests", fmt.Sprint(*footReq/chunks), "-every", fmt.Sprint(every))
		if err != nil {
			return err
		}
		prev := r.footprint[len(r.footprint)-1]
		if i == 0 {
			prev = rssPoint{}
		}
		r.footprint = append(r.footprint, rssPoint{
			label:    fmt.Sprintf("after %dk requests", int64(i+1)*(*footReq/chunks)/1000),
			requests: prev.requests + c.Requests, puts: prev.puts + c.Puts,
			errs: prev.errs + c.Errors, bad: prev.bad + c.Expired + c.Empty,
			rssKB: vmKB(pid, "VmRSS"), hwmKB: vmKB(pid, "VmHWM"), seconds: prev.seconds + c.Seconds,
		})
		if c.FirstError != "" {
			r.problems = append(r.problems, "footprint checker: "+c.FirstError)
		}
	}

	step("stopping the loaded daemon")
	r.loadedStop, err = stopDaemon(daemon)
	if err != nil {
		r.stopErrs = append(r.stopErrs, "after load: "+err.Error())
	}

	if *imdsTest != "" {
		step("Go micro-benchmarks (pkg/imds)")
		r.micro, r.microProf, err = runMicro(*imdsTest, *imdsDir, dir)
		if err != nil {
			r.problems = append(r.problems, err.Error())
		}
	}

	report := r.markdown()
	fmt.Println(report)
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	step("wrote %s", *out)
	return nil
}

func netnsID() string {
	s, _ := os.Readlink("/proc/self/ns/net")
	return s
}

// fetchDoc gets a token and the credential document from the daemon, to
// size the ceiling's body and to hand the token to wrk.
func fetchDoc(addr string) (string, []byte, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "21600")
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("fetching a token: %w", err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", nil, fmt.Errorf("fetching a token: status %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/latest/meta-data/iam/security-credentials/"+benchRole, nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(tok))
	resp, err = c.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("fetching credentials: %w", err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", nil, fmt.Errorf("fetching credentials: status %d", resp.StatusCode)
	}
	return string(tok), doc, nil
}

// machine describes where the numbers were measured.
type machine struct {
	nproc                            int
	kernel, cpu, goVersion, wrk, rev string
	date                             string
}

func describeMachine(bin string) machine {
	m := machine{nproc: runtime.NumCPU(), goVersion: runtime.Version(), date: time.Now().UTC().Format("2006-01-02 15:04 MST")}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if out, err := exec.Command("wrk", "--version").CombinedOutput(); len(out) > 0 {
		_ = err // wrk --version exits 1
		m.wrk = strings.Fields(string(out))[1]
	}
	if out, err := exec.Command(bin, "version").Output(); err == nil {
		m.rev = strings.TrimSpace(string(out))
	}
	return m
}

func median[T int64 | float64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

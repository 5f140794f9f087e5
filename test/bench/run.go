package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// The targets. Clients reach the daemon as they do in production: at
// http://169.254.169.254/, through its nat OUTPUT DNAT to the listener's
// default 169.254.169.254:254. The goals (report.go) are for the credential
// GET through the DNAT, without and with a roles table.
const (
	targetCeiling  = "ceiling (net/http, fixed body)"
	targetRedirect = "imds-shim credentials GET via 169.254.169.254 (DNAT to :254)"
	targetRoles    = "imds-shim credentials GET via 169.254.169.254, with roles (caller matches the 3rd entry)"
	targetPut      = "imds-shim token PUT via 169.254.169.254"
	targetCred     = "diagnostic: imds-shim credentials GET direct to 169.254.169.254:254 (no DNAT)"
	targetNetHTTP  = "diagnostic: imds.Server handler in a bare net/http.Server"
	targetBare     = "diagnostic: imds.Server handler in the daemon's net/http.Server (with its limits), without the daemon"
	targetCeilNAT  = "diagnostic: the ceiling via a DNAT"
	targetFloor    = "diagnostic: floor via a DNAT: net/http.Server with the daemon's limits and response headers, no imds-shim code"
	targetFloorGC  = "diagnostic: the floor via a DNAT, holding 0.5 MiB more live heap"
)

// endpoint is the address clients use; the DNAT sends port 80 to listen,
// the daemon's default imds.listen with the network managed.
const (
	endpoint = "169.254.169.254"
	listen   = "169.254.169.254:254"
)

// target is one server under load in the throughput rounds.
type target struct {
	name, url string
	env       []string
	pid       int // the server process, for its CPU time
}

// results is everything one run measured.
type results struct {
	machine    machine
	motoAssume time.Duration // a bare AssumeRole against moto, median
	opts       wrkOpts
	rounds     int
	targets    []string
	byTarget   map[string][]wrkResult
	paired     map[string][]wrkResult // for each target, the ceiling run next to each of its runs
	docBytes   int
	rolesDoc   int // the roles daemon's credential document, bytes
	rotation   checkResult
	rotEvery   time.Duration
	footprint  []rssPoint
	ready      []time.Duration
	rolesReady time.Duration   // the roles daemon's exec to READY=1
	fetches    []time.Duration // first AssumeRole per start, from the daemon's log
	netSetups  []time.Duration // network setup per start, from the daemon's log
	stops      []time.Duration
	stopErrs   []string
	serverCPUs string // where the servers ran, if pinned
	loadedStop time.Duration
	micro      []microResult
	microProf  string
	identify   []identifyResult
	gc         []gcRow // allocation and GC cycles per request, per server
	problems   []string
}

// The servers of the allocation table (gcRow): the ceiling and the floors
// are fresh processes reached directly, the daemons as clients reach them.
const (
	gcCeiling   = "ceiling (net/http, fixed body)"
	gcFloor     = "floor: net/http.Server with the daemon's limits and response headers, no imds-shim code"
	gcFloorHeap = "the floor holding 0.5 MiB more live heap"
	gcDaemon    = "imds-shim credentials GET via 169.254.169.254"
	gcRoles     = "imds-shim credentials GET via 169.254.169.254, with roles"
)

// gcRow is one server's allocation and garbage collection under load: one
// wrk run, with the server's gcCounts read before and after it.
type gcRow struct {
	name     string
	requests int64
	counts   gcCounts
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
	callersTest := fs.String("callers-test", "", "pkg/callers test binary (go test -c) for BenchmarkIdentify")
	lua := fs.String("lua", "test/bench/imds.lua", "wrk script")
	out := fs.String("out", "test/bench/RESULTS.md", "where to write the results")
	rounds := fs.Int("rounds", 5, "rounds over all targets, each target run paired with a ceiling run")
	dur := fs.Duration("duration", 2*time.Second, "length of each wrk run")
	conns := fs.Int("c", 32, "wrk connections")
	threads := fs.Int("t", 1, "wrk threads")
	cycles := fs.Int("cycles", 5, "start/stop cycles for the lifecycle figures")
	footReq := fs.Int64("footprint-requests", 1_000_000, "requests in the footprint phase")
	footTok := fs.Int64("footprint-tokens", 100_000, "distinct tokens in the footprint phase")
	rotDur := fs.Duration("rotation", 10*time.Second, "length of the rotation-under-load phase")
	pin := fs.Bool("pin", runtime.NumCPU() >= 2, "run load generators on CPU 0 and servers on the last CPU (taskset)")
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
	for _, p := range []*string{bin, imdsTest, imdsDir, callersTest, lua, out} {
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
		rounds: *rounds, byTarget: map[string][]wrkResult{}, paired: map[string][]wrkResult{}, rotEvery: time.Second}
	var clientCPUs, serverCPUs string
	if *pin {
		clientCPUs, serverCPUs = "0", fmt.Sprint(runtime.NumCPU()-1)
		r.opts.cpus, r.serverCPUs = clientCPUs, serverCPUs
	}
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
	metrics, err := freePort()
	if err != nil {
		return err
	}
	denv, err := newDaemonEnv(*bin, dir, motoURL, metrics)
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

	r.motoAssume, err = timeAssumeRole(motoURL, 5)
	if err != nil {
		return err
	}
	step("lifecycle: %d start/stop cycles against moto", *cycles)
	for range *cycles {
		p, ready, err := denv.start(ps, "", denv.config)
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

	r.fetches, r.netSetups = startPhases(denv.logPath)

	step("starting the daemon for the load phases")
	daemon, ready, err := denv.start(ps, serverCPUs, denv.config)
	if err != nil {
		return err
	}
	r.ready = append(r.ready, ready)
	pid := daemon.cmd.Process.Pid
	r.footprint = append(r.footprint, rssPoint{label: "after READY=1", rssKB: vmKB(pid, "VmRSS"), hwmKB: vmKB(pid, "VmHWM")})

	token, doc, err := fetchDoc(endpoint, benchRole)
	if err != nil {
		return err
	}
	r.docBytes = len(doc)

	ps.serverCPUs = serverCPUs
	ceilProc, ceilAddr, err := ps.startAnnounced(self, "ceiling", "ceiling", "-size", fmt.Sprint(len(doc)))
	if err != nil {
		return err
	}
	// Diagnostic servers split the daemon's cost from the ceiling's:
	// imds.Server, the daemon's handler, alone in the daemon's
	// net/http.Server (daemon.NewHTTPServer, its limits and connection
	// tracking) and in a bare net/http.Server.
	bareProc, bareAddr, err := ps.startAnnounced(self, "imds.Server", "rotating", "-every", "1h", "-life", "2h")
	if err != nil {
		return err
	}
	stdProc, stdAddr, err := ps.startAnnounced(self, "imds.Server in net/http", "rotating", "-every", "1h", "-life", "2h", "-server", "net/http")
	if err != nil {
		return err
	}
	// The floor (ceilingMain) and the ceiling itself again, each behind a
	// DNAT of the harness's own like the daemon's: what the standard
	// library and the kernel's NAT cost, with no imds-shim code at all.
	floorProc, floorAddr, err := ps.startAnnounced(self, "floor", "ceiling", "-floor", "-size", fmt.Sprint(len(doc)))
	if err != nil {
		return err
	}
	// The floor again with about as much more live heap as the daemon's
	// process holds over the floor's (1.28 against 0.83 MB live after a
	// collection under this load, from runtime/metrics' /gc/heap/live:bytes;
	// the allocation table shows the GC cycles that follow from it): what a
	// larger heap alone does to latency under load, where the garbage
	// collector marks it over and over on the one CPU that also serves.
	floorGCProc, floorGCAddr, err := ps.startAnnounced(self, "floor+heap", "ceiling", "-floor", "-heap", "512", "-size", fmt.Sprint(len(doc)))
	if err != nil {
		return err
	}
	undo, err := dnat(map[string]string{natCeiling: ceilAddr, natFloor: floorAddr, natFloorGC: floorGCAddr})
	if err != nil {
		return err
	}
	defer undo()
	stdToken, _, err := fetchDoc(stdAddr, benchRole)
	if err != nil {
		return err
	}
	bareToken, _, err := fetchDoc(bareAddr, benchRole)
	if err != nil {
		return err
	}
	credPath := "/latest/meta-data/iam/security-credentials/" + benchRole
	tok := "IMDS_TOKEN=" + token
	targets := []target{
		{name: targetCeiling, url: "http://" + ceilAddr + credPath, env: []string{tok}, pid: ceilProc.cmd.Process.Pid},
		{name: targetNetHTTP, url: "http://" + stdAddr + credPath,
			env: []string{"IMDS_TOKEN=" + stdToken}, pid: stdProc.cmd.Process.Pid},
		{name: targetBare, url: "http://" + bareAddr + credPath,
			env: []string{"IMDS_TOKEN=" + bareToken}, pid: bareProc.cmd.Process.Pid},
		{name: targetCeilNAT, url: "http://" + natCeiling + credPath, env: []string{tok}, pid: ceilProc.cmd.Process.Pid},
		{name: targetFloor, url: "http://" + natFloor + credPath, env: []string{tok}, pid: floorProc.cmd.Process.Pid},
		{name: targetFloorGC, url: "http://" + natFloorGC + credPath, env: []string{tok}, pid: floorGCProc.cmd.Process.Pid},
		{name: targetRedirect, url: "http://" + endpoint + credPath, env: []string{tok}, pid: pid},
		{name: targetPut, url: "http://" + endpoint + "/latest/api/token", env: []string{"IMDS_MODE=put"}, pid: pid},
		{name: targetCred, url: "http://" + listen + credPath, env: []string{tok}, pid: pid},
	}
	r.targets = append(r.targets, targets[0].name)
	if err := r.runRounds(targets[0], targets[1:], step); err != nil {
		return err
	}
	r.noteErrors(targets[1:])
	r.footprint = append(r.footprint, rssPoint{label: "after the throughput rounds", rssKB: vmKB(pid, "VmRSS"), hwmKB: vmKB(pid, "VmHWM")})

	// Allocation and GC cycles per request, from the Go collector's
	// counters: the daemon's on its metrics listener; the ceiling's and
	// the floors' from fresh processes that serve them on a listener of
	// their own (-stats), so that the processes of the paired rounds above
	// held nothing more than before.
	step("allocation and garbage collection per request")
	daemonStats := fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)
	for _, x := range []struct {
		name string
		args []string
	}{
		{gcCeiling, nil},
		{gcFloor, []string{"-floor"}},
		{gcFloorHeap, []string{"-floor", "-heap", "512"}},
	} {
		statsPort, err := freePort()
		if err != nil {
			return err
		}
		args := append([]string{"ceiling", "-size", fmt.Sprint(len(doc)), "-stats", fmt.Sprintf("127.0.0.1:%d", statsPort)}, x.args...)
		p, addr, err := ps.startAnnounced(self, x.name+" (stats)", args...)
		if err != nil {
			return err
		}
		err = r.measureGC(x.name, "http://"+addr+credPath, fmt.Sprintf("http://127.0.0.1:%d/metrics", statsPort), tok)
		p.stop(5 * time.Second)
		if err != nil {
			return err
		}
	}
	if err := r.measureGC(gcDaemon, "http://"+endpoint+credPath, daemonStats, tok); err != nil {
		return err
	}

	step("rotation under load: credentials rotating every %v for %v", r.rotEvery, *rotDur)
	rot, rotAddr, err := ps.startAnnounced(self, "rotating", "rotating", "-every", r.rotEvery.String(), "-life", "3s")
	if err != nil {
		return err
	}
	r.rotation, err = runCheck(self, clientCPUs, "-addr", rotAddr, "-role", benchRole, "-c", "8",
		"-duration", rotDur.String(), "-every", "1000")
	rot.stop(5 * time.Second)
	if err != nil {
		return err
	}

	const chunks = 4
	step("footprint: %d requests with %d distinct tokens in %d chunks", *footReq, *footTok, chunks)
	every := max(*footReq / *footTok, 1)
	for i := range chunks {
		c, err := runCheck(self, clientCPUs, "-addr", endpoint+":80", "-role", benchRole, "-c", "8",
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

	// The roles table needs a daemon of its own, started after the first
	// one has stopped (both would manage 169.254.169.254); its runs are
	// paired with the same ceiling, so its ratios compare with the others'.
	step("starting the daemon with a roles table")
	rolesDaemon, ready, err := denv.start(ps, serverCPUs, denv.rolesConfig)
	if err != nil {
		return err
	}
	r.rolesReady = ready
	rolesToken, rolesDoc, err := fetchDoc(endpoint, rolesUserRole)
	if err != nil {
		return fmt.Errorf("the roles daemon: %w", err)
	}
	r.rolesDoc = len(rolesDoc)
	roles := target{name: targetRoles, url: "http://" + endpoint + "/latest/meta-data/iam/security-credentials/" + rolesUserRole,
		env: []string{"IMDS_TOKEN=" + rolesToken}, pid: rolesDaemon.cmd.Process.Pid}
	if err := r.runRounds(targets[0], []target{roles}, step); err != nil {
		return err
	}
	r.noteErrors([]target{roles})
	if err := r.measureGC(gcRoles, roles.url, daemonStats, roles.env[0]); err != nil {
		return err
	}
	if _, err := stopDaemon(rolesDaemon); err != nil {
		r.stopErrs = append(r.stopErrs, "roles daemon: "+err.Error())
	}

	if *callersTest != "" {
		step("caller identification (pkg/callers BenchmarkIdentify)")
		r.identify, err = runIdentify(*callersTest, serverCPUs)
		if err != nil {
			r.problems = append(r.problems, err.Error())
		}
	}

	if *imdsTest != "" {
		step("Go micro-benchmarks (pkg/imds)")
		r.micro, r.microProf, r.machine.cpuGo, err = runMicro(*imdsTest, *imdsDir, dir)
		if err != nil {
			r.problems = append(r.problems, err.Error())
		}
	}

	r.machine.loadEnd = loadavg()
	report := r.markdown()
	fmt.Println(report)
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	step("wrote %s", *out)
	return nil
}

// runRounds runs wrk against each of others, rounds times, every run paired
// with a ceiling run right before or after it (the order alternates); a
// target's ratios are taken to its paired ceiling runs: other work on a
// shared machine drifts over seconds to minutes, and a pair a few seconds
// long sees the same drift on both sides, where one ceiling figure for the
// whole run would not.
func (r *results) runRounds(ceil target, others []target, step func(string, ...any)) error {
	for _, t := range others {
		r.targets = append(r.targets, t.name)
	}
	for round := range r.rounds {
		for i := range others {
			t := others[(i+round)%len(others)]
			pair := [2]target{ceil, t}
			if (round+i)%2 == 1 {
				pair = [2]target{t, ceil}
			}
			var got [2]wrkResult
			for j, x := range pair {
				step("round %d/%d: %s", round+1, r.rounds, x.name)
				cpu0 := cpuTime(x.pid)
				w, err := runWrk(r.opts, x.url, x.env...)
				if err != nil {
					return err
				}
				w.cpu = cpuTime(x.pid) - cpu0
				got[j] = w
			}
			tw, cw := got[1], got[0]
			if pair[0].name != ceil.name {
				tw, cw = got[0], got[1]
			}
			r.byTarget[t.name] = append(r.byTarget[t.name], tw)
			r.paired[t.name] = append(r.paired[t.name], cw)
			r.byTarget[ceil.name] = append(r.byTarget[ceil.name], cw)
		}
	}
	return nil
}

// measureGC runs wrk once against url and records what the server whose
// Go collector stats serves allocated and collected meanwhile.
func (r *results) measureGC(name, url, stats string, env ...string) error {
	before, err := scrapeGCCounts(stats)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	w, err := runWrk(r.opts, url, env...)
	if err != nil {
		return err
	}
	after, err := scrapeGCCounts(stats)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if w.errors() > 0 {
		r.problems = append(r.problems, fmt.Sprintf("%s: %d failed requests while measuring allocation", name, w.errors()))
	}
	r.gc = append(r.gc, gcRow{name: name, requests: w.Requests, counts: after.sub(before)})
	return nil
}

// noteErrors records, as a problem of the run (which prints the daemon's
// log), every target that answered a request with an error.
func (r *results) noteErrors(ts []target) {
	for _, t := range ts {
		if e := errorKinds(r.byTarget[t.name]); e != "0" {
			r.problems = append(r.problems, fmt.Sprintf("%s: %s failed requests", t.name, e))
		}
	}
}

func netnsID() string {
	s, _ := os.Readlink("/proc/self/ns/net")
	return s
}

// fetchDoc gets a token and role's credential document from the server at
// addr, to size the ceiling's body and to hand the token to wrk. The token
// is bound to this process's uid and unit, which wrk, started by it,
// shares.
func fetchDoc(addr, role string) (string, []byte, error) {
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
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/latest/meta-data/iam/security-credentials/"+role, nil)
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
	date, loadStart, loadEnd         string
	cpuGo                            string // the cpu: line of go test -bench
	nice                             int    // of the harness and so of every process it starts
}

func describeMachine(bin string) machine {
	m := machine{nproc: runtime.NumCPU(), goVersion: runtime.Version(), date: time.Now().UTC().Format("2006-01-02 15:04 MST"),
		loadStart: loadavg(), nice: niceness()}
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

// loadavg is the 1, 5 and 15 minute load averages: other work on the
// machine competes with the benchmark for its CPUs.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// niceness is this process's nice value (field 19 of /proc/self/stat).
func niceness() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n := 0
	if len(f) > 16 {
		_, _ = fmt.Sscan(f[16], &n)
	}
	return n
}

// cpuTime is the user+system CPU time a process has used so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	_, _ = fmt.Sscan(f[11], &ut)
	_, _ = fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// timeAssumeRole times n bare AssumeRole calls against moto and returns the
// median: the part of exec-to-READY that is the emulator's, not the daemon's.
func timeAssumeRole(motoURL string, n int) (time.Duration, error) {
	form := url.Values{"Action": {"AssumeRole"}, "Version": {"2011-06-15"},
		"RoleArn": {benchRoleARN}, "RoleSessionName": {"bench-probe"}}.Encode()
	var ds []time.Duration
	for range n {
		req, _ := http.NewRequest(http.MethodPost, motoURL+"/", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// moto routes unsigned requests to S3; any SigV4-shaped header reaches STS.
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIABENCHBENCHBENCH0/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00")
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, fmt.Errorf("timing AssumeRole against moto: %w", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ds = append(ds, time.Since(t0))
		if resp.StatusCode != 200 || !strings.Contains(string(body), "AssumeRoleResult") {
			return 0, fmt.Errorf("timing AssumeRole against moto: status %d", resp.StatusCode)
		}
	}
	return median(ds), nil
}

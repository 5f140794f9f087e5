package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// microResult is one line of go test -bench output.
type microResult struct {
	name        string
	nsPerOp     float64
	bytesPerOp  int64
	allocsPerOp int64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

// runMicro runs pkg/imds's benchmarks from its compiled test binary, and
// for each handler-only benchmark that allocates, returns pprof's listing
// of where.
func runMicro(testBin, pkgDir, tmp string) (res []microResult, prof, cpu string, err error) {
	run := func(args ...string) (string, error) {
		cmd := exec.Command(testBin, append([]string{"-test.run", "^$", "-test.benchmem"}, args...)...)
		cmd.Dir = pkgDir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil {
			return out.String(), fmt.Errorf("running pkg/imds benchmarks: %w: %s", err, out.String())
		}
		return out.String(), nil
	}
	out, err := run("-test.bench", ".", "-test.benchtime", "1s")
	if err != nil {
		return nil, "", "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "cpu: "); ok {
			cpu = strings.TrimSpace(v)
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.ParseInt(m[3], 10, 64)
		allocs, _ := strconv.ParseInt(m[4], 10, 64)
		res = append(res, microResult{name: m[1], nsPerOp: ns, bytesPerOp: b, allocsPerOp: allocs})
	}
	if len(res) == 0 {
		return nil, "", cpu, fmt.Errorf("pkg/imds benchmarks printed no results: %s", out)
	}
	var profs strings.Builder
	for _, r := range res {
		// Profile every handler-only benchmark that allocates; the HTTP
		// one counts the client's allocations too.
		if r.allocsPerOp == 0 || strings.Contains(r.name, "HTTP") {
			continue
		}
		name, _, _ := strings.Cut(r.name, "-")
		mem := filepath.Join(tmp, "mem.out")
		if _, err := run("-test.bench", "^"+name+"$", "-test.benchtime", "20000x",
			"-test.memprofile", mem, "-test.memprofilerate", "1"); err != nil {
			return res, profs.String(), cpu, err
		}
		top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=8", "-sample_index=alloc_objects", testBin, mem).CombinedOutput()
		_ = os.Remove(mem)
		if err != nil {
			return res, profs.String(), cpu, fmt.Errorf("reading the memory profile of %s: %w: %s", name, err, top)
		}
		fmt.Fprintf(&profs, "%s (20000 iterations; setup included):\n\n```\n%s```\n\n", name, skipHeader(string(top)))
	}
	return res, profs.String(), cpu, nil
}

// skipHeader drops pprof's File/Build ID/Time lines, which change every run.
func skipHeader(top string) string {
	var keep []string
	for _, line := range strings.SplitAfter(top, "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "")
}

// identifyResult is one sub-benchmark of pkg/callers' BenchmarkIdentify:
// what identifying one new connection costs with that many other TCP
// sockets open.
type identifyResult struct {
	name    string
	nsPerOp float64
}

var identifyLine = regexp.MustCompile(`^(BenchmarkIdentify/\S+)\s+\d+\s+([\d.]+) ns/op`)

// runIdentify runs pkg/callers' BenchmarkIdentify from its compiled test
// binary, on cpus (where the servers run) if not empty. Its TestMain moves it
// into a network namespace of its own (nested in the harness's), where it
// installs the address and DNAT it needs.
func runIdentify(testBin, cpus string) ([]identifyResult, error) {
	cmd := pinned(cpus, testBin, "-test.run", "^$", "-test.bench", "^BenchmarkIdentify$", "-test.benchtime", "1s")
	cmd.Dir = filepath.Dir(testBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("running pkg/callers BenchmarkIdentify: %w: %s", err, out.String())
	}
	res := parseIdentify(out.String())
	if len(res) == 0 {
		return nil, fmt.Errorf("pkg/callers BenchmarkIdentify printed no results (skipped?): %s", out.String())
	}
	return res, nil
}

func parseIdentify(out string) []identifyResult {
	var res []identifyResult
	for _, line := range strings.Split(out, "\n") {
		if m := identifyLine.FindStringSubmatch(line); m != nil {
			ns, _ := strconv.ParseFloat(m[2], 64)
			res = append(res, identifyResult{name: m[1], nsPerOp: ns})
		}
	}
	return res
}

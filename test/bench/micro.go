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

// runMicro runs pkg/imds's benchmarks from its compiled test binary. If the
// handler-only credential GET allocates, it profiles that benchmark and
// returns pprof's listing of where.
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
	for _, r := range res {
		if !strings.HasPrefix(r.name, "BenchmarkCredentialsPath-") || r.allocsPerOp == 0 {
			continue
		}
		mem := filepath.Join(tmp, "mem.out")
		if _, err := run("-test.bench", "^BenchmarkCredentialsPath$", "-test.benchtime", "20000x",
			"-test.memprofile", mem, "-test.memprofilerate", "1"); err != nil {
			return res, "", cpu, err
		}
		top, err := exec.Command("go", "tool", "pprof", "-top", "-sample_index=alloc_objects", testBin, mem).CombinedOutput()
		if err != nil {
			return res, "", cpu, fmt.Errorf("reading the memory profile: %w: %s", err, top)
		}
		_ = os.Remove(mem)
		return res, string(top), cpu, nil
	}
	return res, "", cpu, nil
}

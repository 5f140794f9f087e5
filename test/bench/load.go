package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// wrkResult is one wrk run, from imds.lua's done().
type wrkResult struct {
	Requests   int64 `json:"requests"`
	DurationUS int64 `json:"duration_us"`
	Bytes      int64 `json:"bytes"`
	Connect    int64 `json:"connect"`
	Read       int64 `json:"read"`
	Write      int64 `json:"write"`
	Status     int64 `json:"status"`
	Timeout    int64 `json:"timeout"`
	P50US      int64 `json:"p50_us"`
	P99US      int64 `json:"p99_us"`
	MaxUS      int64 `json:"max_us"`

	cpu time.Duration // the server's CPU time during the run
}

func (r wrkResult) rps() float64 { return float64(r.Requests) / (float64(r.DurationUS) / 1e6) }
func (r wrkResult) errors() int64 {
	return r.Connect + r.Read + r.Write + r.Status + r.Timeout
}

// wrkOpts is how each wrk run loads its target.
type wrkOpts struct {
	lua      string
	threads  int
	conns    int
	duration time.Duration
	cpus     string // where wrk runs (see pinned)
}

func runWrk(o wrkOpts, url string, env ...string) (wrkResult, error) {
	cmd := pinned(o.cpus, "wrk", "-t", strconv.Itoa(o.threads), "-c", strconv.Itoa(o.conns),
		"-d", fmt.Sprintf("%ds", int(o.duration.Seconds())), "--timeout", "5s", "-s", o.lua, url)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("running wrk against %s: %w: %s", url, err, errb.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if js, ok := strings.CutPrefix(line, "BENCH "); ok {
			var r wrkResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				return wrkResult{}, fmt.Errorf("parsing wrk output %q: %w", js, err)
			}
			return r, nil
		}
	}
	return wrkResult{}, fmt.Errorf("wrk printed no BENCH line: %s", out.String())
}

// runCheck runs this binary's checker in its own process.
func runCheck(self, cpus string, args ...string) (checkResult, error) {
	cmd := pinned(cpus, self, append([]string{"check"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return checkResult{}, fmt.Errorf("running the checker: %w", err)
	}
	var r checkResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return checkResult{}, fmt.Errorf("parsing checker output %q: %w", out.String(), err)
	}
	return r, nil
}

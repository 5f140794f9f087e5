package main

import (
	"strings"
	"testing"
	"time"
)

// run is a wrk result of n requests in one second at cpu per request.
func run(n, p99 int64, cpu time.Duration) wrkResult {
	return wrkResult{Requests: n, DurationUS: 1e6, P50US: p99 / 3, P99US: p99, cpu: cpu * time.Duration(n)}
}

// Each target's ratios come from the ceiling run paired with it: when the
// machine slows down between pairs, a target at 0.92 of its neighbour
// stays at 0.92, where comparing medians over the whole run would not.
func TestSummaryPairsRatios(t *testing.T) {
	r := &results{rounds: 3, targets: []string{targetCeiling, targetRedirect},
		byTarget: map[string][]wrkResult{}, paired: map[string][]wrkResult{}}
	for _, speed := range []int64{100, 60, 30} { // a machine slowing down
		c := run(speed*1000, 200_000/speed, 20*time.Microsecond*100/time.Duration(speed))
		w := run(speed*920, 200_000/speed*11/10, 22*time.Microsecond*100/time.Duration(speed))
		r.byTarget[targetCeiling] = append(r.byTarget[targetCeiling], c)
		r.byTarget[targetRedirect] = append(r.byTarget[targetRedirect], w)
		r.paired[targetRedirect] = append(r.paired[targetRedirect], c)
	}
	// The slowest target run against the fastest ceiling run would say
	// 0.28; the median target run against the median ceiling run is 0.92
	// here only because every pair moved together.
	s := r.summary(targetRedirect)
	if s.rpsRatio < 0.919 || s.rpsRatio > 0.921 {
		t.Errorf("req/s ratio %.3f, want 0.92", s.rpsRatio)
	}
	if s.p99Ratio < 1.09 || s.p99Ratio > 1.11 {
		t.Errorf("p99 ratio %.3f, want 1.10", s.p99Ratio)
	}
	if s.cpuRatio < 1.09 || s.cpuRatio > 1.11 {
		t.Errorf("CPU ratio %.3f, want 1.10", s.cpuRatio)
	}
	if len(s.perPair) != 3 {
		t.Errorf("%d per-pair ratios, want 3", len(s.perPair))
	}
	if c := r.summary(targetCeiling); c.rpsRatio != 1 || c.p99Ratio != 1 {
		t.Errorf("ceiling against itself: %+v", c)
	}
	md := r.markdown()
	for _, want := range []string{"| " + targetRedirect + " | 55200 | 0.92 | 0.92, 0.92, 0.92 |", "≥ 0.80×, p99 ≤ 1.3×, no errors: met", "**Noisy run:**"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// The identification figures come from go test's output, one row per
// sub-benchmark, and the goal holds only if every row meets it.
func TestIdentifyReport(t *testing.T) {
	out := `goos: linux
cpu: AMD EPYC
BenchmarkIdentify/sockets=0-2         	  239812	      4978 ns/op	         4.978 µs/op
BenchmarkIdentify/sockets=1000-2      	  200000	      5321.5 ns/op	         5.322 µs/op
BenchmarkIdentify/sockets=8000-2      	  100000	     10400 ns/op	        10.40 µs/op
PASS
`
	got := parseIdentify(out)
	if len(got) != 3 || got[0].name != "BenchmarkIdentify/sockets=0-2" || got[1].nsPerOp != 5321.5 {
		t.Fatalf("parsed %+v", got)
	}
	r := &results{identify: got}
	md := r.markdown()
	for _, want := range []string{"| BenchmarkIdentify/sockets=1000-2 | 5.3 |", "≤ 10 µs per new connection: **missed**"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	r.identify = got[:2]
	if md := r.markdown(); !strings.Contains(md, "≤ 10 µs per new connection: met") {
		t.Errorf("two rows under 10 µs: report lacks met:\n%s", md)
	}
}

// A target that fails requests misses its goal however fast it was, and
// the report says which kind of failure wrk counted.
func TestErrorsMissGoal(t *testing.T) {
	c, w := run(100_000, 1000, 10*time.Microsecond), run(95_000, 1000, 10*time.Microsecond)
	w.Status = 7
	r := &results{rounds: 1, targets: []string{targetCeiling, targetRoles},
		byTarget: map[string][]wrkResult{targetCeiling: {c}, targetRoles: {w}}, paired: map[string][]wrkResult{targetRoles: {c}}}
	md := r.markdown()
	if want := "| 7 (status 7) | ≥ 0.80×, p99 ≤ 1.3×, no errors: **missed** |"; !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
}

// The room the goal leaves for imds-shim's own code is what a server may
// spend per request beyond the floor and still reach the goal: with a
// ceiling at 10 µs, 0.80× allows 12.5 µs; a floor at 11.5 µs leaves 1.0.
func TestFloorBudget(t *testing.T) {
	c := run(100_000, 1000, 10*time.Microsecond)
	r := &results{rounds: 1, targets: []string{targetCeiling, targetCeilNAT, targetFloor, targetFloorGC, targetRedirect},
		byTarget: map[string][]wrkResult{
			targetCeiling:  {c, c, c},
			targetCeilNAT:  {run(97_000, 1000, 10300*time.Nanosecond)},
			targetFloor:    {run(87_000, 1100, 11500*time.Nanosecond)},
			targetFloorGC:  {run(88_000, 1300, 11400*time.Nanosecond)},
			targetRedirect: {run(77_000, 1400, 13*time.Microsecond)},
		},
		paired: map[string][]wrkResult{targetCeilNAT: {c}, targetFloor: {c}, targetFloorGC: {c}, targetRedirect: {c}}}
	md := r.markdown()
	for _, want := range []string{
		"the kernel's NAT costs the ceiling +0.3 µs per request (0.97× its req/s, p99 1.00×)",
		"through it +1.5 µs (0.87×, p99 1.10×)",
		"more than 1.0 µs per request beyond the floor's misses the 0.80× goal",
		"The daemon spends +1.5 µs beyond the floor.",
		"measures 0.88× with p99 1.30× (the floor: 0.87×, p99 1.10×; the daemon: 0.77×, p99 1.40×)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

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
	r := &results{rounds: 3, targets: []string{targetCeiling, targetCred},
		byTarget: map[string][]wrkResult{}, paired: map[string][]wrkResult{}}
	for _, speed := range []int64{100, 60, 30} { // a machine slowing down
		c := run(speed*1000, 200_000/speed, 20*time.Microsecond*100/time.Duration(speed))
		w := run(speed*920, 200_000/speed*11/10, 22*time.Microsecond*100/time.Duration(speed))
		r.byTarget[targetCeiling] = append(r.byTarget[targetCeiling], c)
		r.byTarget[targetCred] = append(r.byTarget[targetCred], w)
		r.paired[targetCred] = append(r.paired[targetCred], c)
	}
	// The slowest target run against the fastest ceiling run would say
	// 0.28; the median target run against the median ceiling run is 0.92
	// here only because every pair moved together.
	s := r.summary(targetCred)
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
	for _, want := range []string{"| imds-shim credentials GET | 55200 | 0.92 | 0.92, 0.92, 0.92 |", "≥ 0.90×, p99 ≤ 1.2×: met", "**Noisy run:**"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

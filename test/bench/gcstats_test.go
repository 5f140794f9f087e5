package main

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
)

// serveGCCounts and parseGCCounts agree on the Go collector's real output:
// the counters are read, and they move with the process's allocations and
// collections.
func TestGCCountsFromTheGoCollector(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := serveGCCounts(addr); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr + "/metrics"
	before, err := scrapeGCCounts(url)
	if err != nil {
		t.Fatal(err)
	}
	var keep [][]byte
	for range 1000 {
		keep = append(keep, make([]byte, 1024))
	}
	runtime.KeepAlive(keep)
	runtime.GC()
	runtime.GC()
	after, err := scrapeGCCounts(url)
	if err != nil {
		t.Fatal(err)
	}
	d := after.sub(before)
	if d.allocBytes < 1000*1024 || d.mallocs < 1000 || d.cycles < 2 {
		t.Errorf("counters moved by %+v; want ≥ 1 MiB, ≥ 1000 objects, ≥ 2 cycles", d)
	}
}

func TestParseGCCounts(t *testing.T) {
	text := `# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 1.2e-05
go_gc_duration_seconds_sum 0.004
go_gc_duration_seconds_count 42
go_memstats_alloc_bytes_total 1.5e+08
go_memstats_alloc_bytes 2.5e+06
go_memstats_mallocs_total 1.234567e+06
`
	got, err := parseGCCounts(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if want := (gcCounts{allocBytes: 1.5e8, mallocs: 1234567, cycles: 42}); got != want {
		t.Errorf("parseGCCounts = %+v, want %+v", got, want)
	}
	for _, drop := range []string{"go_gc_duration_seconds_count", "go_memstats_alloc_bytes_total", "go_memstats_mallocs_total"} {
		var kept []string
		for _, l := range strings.Split(text, "\n") {
			if !strings.HasPrefix(l, drop+" ") {
				kept = append(kept, l)
			}
		}
		if _, err := parseGCCounts(strings.NewReader(strings.Join(kept, "\n"))); err == nil || !strings.Contains(err.Error(), drop) {
			t.Errorf("without %s: err = %v, want one naming it", drop, err)
		}
	}
}

// The report's ratios are the daemon's per-request figures over the
// floor's, whatever the run lengths.
func TestGCReport(t *testing.T) {
	r := &results{gc: []gcRow{
		{name: gcCeiling, requests: 100_000, counts: gcCounts{allocBytes: 150e6, mallocs: 1.5e6, cycles: 55}},
		{name: gcFloor, requests: 100_000, counts: gcCounts{allocBytes: 240e6, mallocs: 2.4e6, cycles: 90}},
		{name: gcDaemon, requests: 50_000, counts: gcCounts{allocBytes: 126e6, mallocs: 1.26e6, cycles: 56.25}},
	}}
	var b strings.Builder
	r.gcMarkdown(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) })
	out := b.String()
	for _, want := range []string{
		"| " + gcFloor + " | 100000 | 2400 | 24.0 | 9.0 |",
		"| " + gcDaemon + " | 50000 | 2520 | 25.2 | 11.2 |",
		"allocates 1.05× the bytes and 1.05× the objects the floor's does, and its garbage collector runs 1.25× as often",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

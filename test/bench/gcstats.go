package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// gcCounts are a Go process's allocation and garbage-collection counters,
// as client_golang's Go collector exports them: the daemon on its metrics
// listener, the ceiling and the floor on the one -stats gives them. Taken
// before and after a run, they say what each request allocates and how
// often the collector ran for it.
type gcCounts struct {
	allocBytes float64 // go_memstats_alloc_bytes_total
	mallocs    float64 // go_memstats_mallocs_total
	cycles     float64 // go_gc_duration_seconds_count
}

func (a gcCounts) sub(b gcCounts) gcCounts {
	return gcCounts{a.allocBytes - b.allocBytes, a.mallocs - b.mallocs, a.cycles - b.cycles}
}

// perRequest returns the bytes and objects allocated per request and the
// GC cycles per 10,000 requests of n requests.
func (a gcCounts) perRequest(n int64) (bytes, objects, cyclesPer10k float64) {
	if n <= 0 {
		return 0, 0, 0
	}
	f := float64(n)
	return a.allocBytes / f, a.mallocs / f, a.cycles * 1e4 / f
}

// parseGCCounts reads gcCounts from the Prometheus text format; each of
// the three series must be there.
func parseGCCounts(r io.Reader) (gcCounts, error) {
	var c gcCounts
	want := map[string]*float64{
		"go_memstats_alloc_bytes_total": &c.allocBytes,
		"go_memstats_mallocs_total":     &c.mallocs,
		"go_gc_duration_seconds_count":  &c.cycles,
	}
	found := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		dst := want[name]
		if !ok || dst == nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return gcCounts{}, fmt.Errorf("%s: %w", name, err)
		}
		*dst, found[name] = v, true
	}
	if err := sc.Err(); err != nil {
		return gcCounts{}, err
	}
	for name := range want {
		if !found[name] {
			return gcCounts{}, fmt.Errorf("no %s in the metrics", name)
		}
	}
	return c, nil
}

// scrapeGCCounts reads gcCounts from a metrics URL.
func scrapeGCCounts(url string) (gcCounts, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return gcCounts{}, fmt.Errorf("reading %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return gcCounts{}, fmt.Errorf("reading %s: %s", url, resp.Status)
	}
	gc, err := parseGCCounts(resp.Body)
	if err != nil {
		return gcCounts{}, fmt.Errorf("reading %s: %w", url, err)
	}
	return gc, nil
}

// serveGCCounts serves this process's Go collector on its own listener at
// addr, apart from the server under load, which then does no more per
// request than before.
func serveGCCounts(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	go func() { _ = http.Serve(ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})) }()
	return nil
}

package main

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imds-shim/imds-shim/pkg/credentials"
	"github.com/imds-shim/imds-shim/pkg/daemon"
)

// metrics implements the observers of pkg/imds, pkg/credentials and
// pkg/netredirect with Prometheus collectors on a private registry.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	tokens      prometheus.Counter
	unavailable prometheus.Counter
	attempts    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	stsLatency  prometheus.Histogram
	repairs     *prometheus.CounterVec
	conns       prometheus.Gauge
	connsClosed *prometheus.CounterVec
	set         atomic.Pointer[credentials.Set]
}

func newMetrics(version string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imds_shim_requests_total", Help: "Metadata requests by path class and HTTP status.",
	}, []string{"class", "code"})
	m.tokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "imds_shim_tokens_issued_total", Help: "IMDSv2 session tokens issued.",
	})
	m.unavailable = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "imds_shim_credentials_unavailable_total",
		Help: "Credential requests answered with an error because no valid credentials existed.",
	})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imds_shim_refresh_attempts_total", Help: "STS calls made to obtain credentials, by role.",
	}, []string{"role"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imds_shim_refresh_failures_total", Help: "Failed STS calls by role and error class.",
	}, []string{"role", "reason"})
	m.stsLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imds_shim_sts_request_duration_seconds", Help: "Latency of STS calls.",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imds_shim_network_repairs_total", Help: "Repairs of the address or rules after something removed them.",
	}, []string{"what"})
	m.conns = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imds_shim_connections", Help: "Open connections to the metadata listener.",
	})
	m.connsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imds_shim_connections_closed_total",
		Help: "Metadata connections closed, by reason: ended (by the client or its request), " +
			"header_timeout, idle_timeout, write_timeout (the server's limits), shutdown.",
	}, []string{"reason"})
	for _, r := range daemon.ClosedReasons {
		m.connsClosed.WithLabelValues(r)
	}
	expiry := expiryCollector{m}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imds_shim_build_info", Help: "Always 1; labelled with the version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	m.reg.MustRegister(m.requests, m.tokens, m.unavailable, m.attempts, m.failures, m.stsLatency, m.repairs,
		m.conns, m.connsClosed, expiry, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ConnectionOpened implements daemon.ConnObserver.
func (m *metrics) ConnectionOpened() { m.conns.Inc() }

// ConnectionClosed implements daemon.ConnObserver.
func (m *metrics) ConnectionClosed(reason string) {
	m.conns.Dec()
	m.connsClosed.WithLabelValues(reason).Inc()
}

// Request implements imds.Observer.
func (m *metrics) Request(class string, status int) {
	m.requests.WithLabelValues(class, strconv.Itoa(status)).Inc()
}

// TokenIssued implements imds.Observer.
func (m *metrics) TokenIssued() { m.tokens.Inc() }

// CredentialsUnavailable implements imds.Observer.
func (m *metrics) CredentialsUnavailable(error) { m.unavailable.Inc() }

// roleObserver is the credentials.Observer of one credential set, whose
// events are counted under its role label.
func (m *metrics) roleObserver(label string) credentials.Observer {
	return roleObserver{m: m, role: label, attempts: m.attempts.WithLabelValues(label)}
}

type roleObserver struct {
	m        *metrics
	role     string
	attempts prometheus.Counter
}

// RefreshAttempt implements credentials.Observer.
func (o roleObserver) RefreshAttempt() { o.attempts.Inc() }

// RefreshFailed implements credentials.Observer.
func (o roleObserver) RefreshFailed(class string) { o.m.failures.WithLabelValues(o.role, class).Inc() }

// STSLatency implements credentials.Observer.
func (o roleObserver) STSLatency(d time.Duration) { o.m.stsLatency.Observe(d.Seconds()) }

// Repaired implements netredirect.Observer.
func (m *metrics) Repaired(what string) { m.repairs.WithLabelValues(what).Inc() }

func (m *metrics) setSet(s *credentials.Set) { m.set.Store(s) }

// expiryDesc is imds_shim_credentials_expiry_seconds{role}.
var expiryDesc = prometheus.NewDesc("imds_shim_credentials_expiry_seconds",
	"Seconds until the served credentials of each role expire; 0 when the role serves none "+
		"(for a per-caller role: its latest session's).", []string{"role"}, nil)

// expiryCollector reports, at each scrape, every role of the Set serving
// now: the roles come and go with reloads.
type expiryCollector struct{ m *metrics }

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.set.Load()
	if s == nil {
		return
	}
	now := time.Now()
	for role, exp := range s.Expiry() {
		v := 0.0
		if !exp.IsZero() {
			v = max(exp.Sub(now).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, v, role)
	}
}

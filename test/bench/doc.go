// Command bench is imds-shim's benchmark harness (make bench). One binary
// plays every part, chosen by its first argument, so that servers and load
// generators run as separate processes:
//
//	bench run      the orchestrator: starts moto, the daemon (its default
//	               169.254.169.254:254 listener behind its own DNAT; then a
//	               second one with a roles table), the ceiling and the
//	               rotating server, drives wrk and the checker, measures
//	               footprint and lifecycle, runs pkg/callers'
//	               BenchmarkIdentify and pkg/imds's benchmarks, writes
//	               RESULTS.md
//	bench ceiling  a minimal net/http server answering every request with
//	               a fixed body (the upper bound for any Go HTTP server)
//	bench rotating imds.Server with credentials that rotate every second
//	bench check    a load client that parses and checks every credential
//	               document it receives
//
// run refuses to start outside a private network namespace: test/bench/
// bench.sh enters one with unshare --net, so the 169.254.169.254 address and
// DNAT rules the daemon installs never touch the host.
//
// The goals it reports against are ratios to the ceiling measured in the same
// run, there to catch regressions in imds-shim's own code: the daemon serves
// with net/http.Server, and a figure is never a reason to replace a standard
// component with one of our own.
package main

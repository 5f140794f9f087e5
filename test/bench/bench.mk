# make bench: throughput and latency against a net/http ceiling (wrk), the
# 169.254.169.254 redirect (with and without a roles table), credential
# rotation under load, footprint, start/stop times, caller identification
# (pkg/callers) and pkg/imds micro-benchmarks. Needs root; runs in a
# private network namespace; writes test/bench/RESULTS.md. Reports only:
# it fails only when the harness itself breaks.
BENCH_FLAGS ?=
# BENCH_NICE=-10 favours the benchmark over other work on a shared machine.
BENCH_NICE ?= 0
export BENCH_NICE

.PHONY: bench

bench: build
	test/bench/bench.sh $(BIN) $(BENCH_FLAGS)

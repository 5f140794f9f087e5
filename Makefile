# imds-shim — build, test, lint, package.
# Every tool is pinned; `make test` is what .ci/run and README.md run.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
BIN := bin/imds-shim
GOTEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build deps test test-unit demo lint vet staticcheck fmt-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/imds-shim

# The whole suite. As root, packages whose tests drive the kernel re-execute
# themselves in a private network namespace (pkg/internal/nstest); without
# root those tests skip and say so. The packages are built and linted, and
# installed into a booted systemd (packaging/packaging.mk), first, so that
# the log ends with the Go tests' summary.
test: deps build lint-packages e2e test-unit

# Debian packages and the pinned JavaScript SDK the tests need (test/deps.sh).
deps:
	test/deps.sh

# go test's output as usual, then the skipped tests with their reasons and a
# closing count (test/testsummary).
test-unit: build
	set -o pipefail; IMDS_SHIM_BIN=$(CURDIR)/$(BIN) $(GO) test -json $(GOTEST_FLAGS) ./... | $(GO) run ./test/testsummary

# imds-shim's main job with no AWS account: the real daemon in a private
# network namespace against the local STS emulator, and unconfigured AWS
# CLIs getting credentials through 169.254.169.254. Needs root.
demo: build
	test/demo.sh $(BIN)

lint: vet staticcheck fmt-check

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin dist

# Packages and the booted-systemd end-to-end test.
-include packaging/packaging.mk
# make bench: throughput, latency, footprint and lifecycle figures.
-include test/bench/bench.mk

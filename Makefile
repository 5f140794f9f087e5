# imds-shim — build, test, lint, package.
# Every tool is pinned; `make test` is what .ci/run and README.md run.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
BIN := bin/imds-shim
GOTEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build deps test test-unit stock-kernel demo lint vet staticcheck fmt-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/imds-shim

# The whole suite. As root, packages whose tests drive the kernel re-execute
# themselves in a private network namespace (pkg/internal/nstest); without
# root those tests skip and say so. The packages are built and linted,
# installed into a booted systemd (packaging/packaging.mk) and run on
# Debian's stock kernel (stock-kernel) first; the log ends with the Go tests'
# summary and then the stock-kernel suite's closing lines again.
STOCK_SUMMARY := .cache/stock-kernel.summary
test: deps build lint-packages e2e stock-kernel test-unit
	@cat $(STOCK_SUMMARY)

# Debian packages and the pinned JavaScript SDK the tests need (test/deps.sh).
deps:
	test/deps.sh

# go test's output as usual, then the skipped tests with their reasons and a
# closing count (test/testsummary).
test-unit: build
	set -o pipefail; IMDS_SHIM_BIN=$(CURDIR)/$(BIN) $(GO) test -json $(GOTEST_FLAGS) ./... | $(GO) run ./test/testsummary

# The production default (network.link: auto: the dummy link imds0) on
# Debian's own kernel under QEMU/TCG: the kernel tests, the real-binary tests
# and a short .deb end-to-end test in the guest (test/stock-kernel/run.sh).
# The guest image is cached under /var/tmp/imds-shim-stock-kernel. Needs root.
stock-kernel: package
	@mkdir -p .cache; rm -f $(STOCK_SUMMARY)
	IMDS_SHIM_STOCK_SUMMARY=$(CURDIR)/$(STOCK_SUMMARY) GO=$(GO) setsid --wait test/stock-kernel/run.sh $(PKG_OUT) < /dev/null

# imds-shim's main job with no AWS account: the real daemon in a private
# network namespace against the local STS emulator, and unconfigured AWS
# CLIs getting credentials through 169.254.169.254. Needs root.
demo: build
	CGO_ENABLED=0 $(GO) build -o bin/hoststate ./pkg/internal/hoststate/cmd/hoststate
	IMDS_SHIM_HOSTSTATE=$(CURDIR)/bin/hoststate test/demo.sh $(BIN)

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

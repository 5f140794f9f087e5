# packaging/packaging.mk — .deb/.rpm packages, their lint, and the end-to-end
# test in a booted systemd. Included by the top Makefile, which provides GO
# and LDFLAGS.
#
#   make package               dist/imds-shim_*.deb and dist/imds-shim-*.rpm, amd64 + arm64
#   make package-reproducible  build twice, require identical bytes
#   make lint-packages         lintian + rpmlint on what `package` built
#   make e2e                   install the .deb in a systemd-nspawn guest and test it

NFPM_VERSION    := v2.45.2
NFPM            := $(CURDIR)/.cache/tools/nfpm-$(NFPM_VERSION)/nfpm
PKG_ARCHES      := amd64 arm64
PKG_MAIN        ?= ./cmd/imds-shim
PKG_OUT         ?= dist
PKG_BUILD       := $(PKG_OUT)/build
EXAMPLE_CONFIG  ?= packaging/imds-shim.example.yaml
# Extra flags for the recursive make of package-reproducible.
PKG_MAKEFLAGS   ?=
# Version from `git describe` (packaging/version.sh), also what
# `imds-shim version` prints; every timestamp in the packages is the commit
# time, so one commit always gives the same bytes.
ifeq ($(origin PKG_VERSION),undefined)
PKG_VERSION     := $(shell packaging/version.sh 2>/dev/null || echo 0.0.0~unknown)
endif
ifeq ($(origin PKG_EPOCH),undefined)
PKG_EPOCH       := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
endif

.PHONY: package package-reproducible lint-packages e2e

$(NFPM):
	GOBIN=$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package: $(NFPM)
	@set -euo pipefail; \
	rm -rf $(PKG_BUILD); mkdir -p $(PKG_BUILD); \
	rm -f $(PKG_OUT)/imds-shim_*.deb $(PKG_OUT)/imds-shim-*.rpm; \
	for arch in $(PKG_ARCHES); do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS) -X main.version=$(PKG_VERSION) -buildid=' \
	    -o $(PKG_BUILD)/$$arch/imds-shim $(PKG_MAIN); \
	done; \
	cp systemd/imds-shim.service packaging/tmpfiles.conf packaging/imds-shim.yaml packaging/LICENSE $(PKG_BUILD)/; \
	cp $(EXAMPLE_CONFIG) $(PKG_BUILD)/imds-shim.example.yaml; \
	cp -r packaging/deb packaging/rpm $(PKG_BUILD)/; \
	gzip -9n < packaging/imds-shim.8 > $(PKG_BUILD)/imds-shim.8.gz; \
	packaging/gen-changelog.sh packaging/changelog.yaml '$(PKG_VERSION)' $(PKG_EPOCH) > $(PKG_BUILD)/changelog.yaml; \
	for arch in $(PKG_ARCHES); do for fmt in deb rpm; do \
	  (cd $(PKG_BUILD) && PKG_ARCH=$$arch PKG_VERSION='$(PKG_VERSION)' SOURCE_DATE_EPOCH=$(PKG_EPOCH) \
	    $(NFPM) pkg --config $(CURDIR)/packaging/nfpm.yaml --packager $$fmt --target $(abspath $(PKG_OUT))/); \
	done; done; \
	cd $(PKG_OUT) && sha256sum imds-shim_*.deb imds-shim-*.rpm

# A second build from scratch (empty Go build cache, every input touched)
# must give the same bytes as the first. Version and commit time are fixed
# for both, in case HEAD moves in between.
package-reproducible:
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	pin="PKG_VERSION=$(PKG_VERSION) PKG_EPOCH=$(PKG_EPOCH)"; \
	$(MAKE) --no-print-directory $(PKG_MAKEFLAGS) package PKG_OUT=$$tmp/a $$pin >/dev/null; \
	touch packaging/* systemd/imds-shim.service; \
	$(MAKE) --no-print-directory $(PKG_MAKEFLAGS) package PKG_OUT=$$tmp/b GOCACHE=$$tmp/gocache $$pin >/dev/null; \
	(cd $$tmp/a && sha256sum imds-shim_*.deb imds-shim-*.rpm) > $$tmp/a.sum; \
	(cd $$tmp/b && sha256sum -c --quiet) < $$tmp/a.sum; \
	echo "reproducible: $$(wc -l < $$tmp/a.sum) packages byte-identical across two builds"; cat $$tmp/a.sum

# lintian and rpmlint run unprivileged (as nobody, on copies in a private
# directory). rpmlint also gets a cpio that refuses absolute names: nfpm's
# rpm payloads use them, and rpmlint run as root would unpack them into /.
lint-packages: package
	@set -euo pipefail; safe=$$(mktemp -d); trap 'rm -rf "$$safe"' EXIT; chmod 755 $$safe; \
	printf '#!/bin/sh\nexec /usr/bin/cpio --no-absolute-filenames "$$@"\n' > $$safe/cpio; chmod 755 $$safe/cpio; \
	cp $(PKG_OUT)/imds-shim_*.deb $(PKG_OUT)/imds-shim-*.rpm packaging/rpm/rpmlint.toml $$safe/; chmod 644 $$safe/imds-shim* $$safe/rpmlint.toml; \
	cd $$safe; \
	for deb in imds-shim_*.deb; do \
	  echo "lintian $$deb"; \
	  runuser -u nobody -- env HOME=$$safe TMPDIR=$$safe lintian --fail-on error,warning --display-info --info $$deb; \
	done; \
	for rpm in imds-shim-*.rpm; do \
	  echo "rpmlint $$rpm"; \
	  runuser -u nobody -- env HOME=$$safe TMPDIR=$$safe PATH=$$safe:$$PATH rpmlint --config rpmlint.toml $$rpm; \
	done

e2e: package
	setsid --wait test/e2e/run.sh $(PKG_OUT) < /dev/null

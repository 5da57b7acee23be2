# meshpki — see README.md. `make test` is the one command that runs every test.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Times recorded in release archives, SBOMs and the image: the commit's, so they reproduce.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
DIST     := $(GO) run ./internal/dist/cmd/meshpki-dist
STAMP    := -version $(VERSION) -commit $(COMMIT) -date $(SOURCE_DATE_EPOCH)
# Test servers (real Vault, real kube-apiserver + etcd, real istiod) are built from tools/ and
# cached in $(MESHPKI_CACHE) (default ~/.cache/meshpki); a cold build takes minutes.
export MESHPKI_CACHE ?= $(HOME)/.cache/meshpki

.PHONY: all build test test-unit vet lint fmt-check tools vaultdev k8s-testenv istiod bench bench-go bench-hsm bench-k8s bench-mesh bench-openssl demo demo-mesh fuzz release release-hsm image image-hsm manifests clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/meshpki ./cmd/meshpki

vet:
	$(GO) vet ./...

# staticcheck, pinned; its one documented exception is in staticcheck.conf.
# Built once into the cache (GOBIN), not linked again by `go run` on every run.
STATICCHECK_VERSION := v0.8.2
STATICCHECK_BIN := $(HOME)/.cache/meshpki/staticcheck-$(STATICCHECK_VERSION)-$(shell $(GO) env GOVERSION)
lint:
	@test -x $(STATICCHECK_BIN)/staticcheck || GOBIN=$(STATICCHECK_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK_BIN)/staticcheck ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum not tidy: run go mod tidy"; $(GO) mod tidy -diff; exit 1; }

# Build (or find cached) test servers; one at a time, they are heavy.
vaultdev:
	@tools/build.sh vaultdev
k8s-testenv:
	@tools/build.sh k8s-testenv
istiod:
	@tools/build.sh istiod
tools: vaultdev k8s-testenv istiod

# Every test, against real servers: the harness in internal/testenv starts them.
# Four streams at once on the machine's cores:
#   - every package under the race detector, but for the end-to-end tests with real
#     istiod (TestIstiod*), the one that kills CLI processes (TestKill*) and the one
#     that runs the docs' shell blocks (TestDocsRun): they spend their time in
#     istiod, the apiservers and CLI processes whose code the other tests already
#     cover under -race, and the detector would make them cost a third more CPU
#     (measured: 250 vs 178 CPU-s; TestDocsRun 51 vs 32);
#   - those tests, without it, four at a time (-parallel 4: they mostly wait on
#     istiod's reloads; measured alone: 189 s wall instead of 224 s with the
#     default of one per core);
#   - the release archives and the image (internal/dist): no concurrency of their
#     own, and compressing under the race detector takes minutes; at a lower
#     priority, as they finish well before the rest;
#   - go vet and staticcheck, also at a lower priority, so that the end-to-end
#     tests, the longest stream, start at once.
# The output of the background streams follows.
TEST_ENV = VAULTDEV_BIN=$$(tools/build.sh vaultdev)/vaultdev \
	K8S_TESTENV_BIN=$$(tools/build.sh k8s-testenv) \
	ISTIOD_TESTENV_BIN=$$(tools/build.sh istiod) \
	MESHPKI_REQUIRE_SERVERS=1
E2E := ^TestIstiod|^TestKill|^TestDocsRun
test: fmt-check build tools
	@dist=$$(mktemp); e2e=$$(mktemp); lint=$$(mktemp); \
	nice -n 10 $(MAKE) --no-print-directory vet lint >$$lint 2>&1 & lpid=$$!; \
	nice -n 10 $(GO) test -count=1 -timeout 20m ./internal/dist/... >$$dist 2>&1 & pid=$$!; \
	$(TEST_ENV) $(GO) test -count=1 -parallel 4 -timeout 20m -run '$(E2E)' ./cmd/meshpki/ >$$e2e 2>&1 & epid=$$!; \
	$(TEST_ENV) $(GO) test -race -count=1 -timeout 20m -skip '$(E2E)' $$($(GO) list ./... | grep -v /internal/dist/); rc=$$?; \
	wait $$epid || rc=1; echo "== end-to-end tests with real istiod (no race detector):"; cat $$e2e; \
	wait $$pid || rc=1; cat $$dist; \
	wait $$lpid || rc=1; echo "== go vet and staticcheck:"; cat $$lint; rm -f $$dist $$e2e $$lint; exit $$rc

# Unit tests only: tests that need a server skip without one.
test-unit:
	$(GO) test -count=1 ./...

bench: bench-go bench-k8s bench-openssl bench-hsm

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./ca/
	VAULTDEV_BIN=$$(tools/build.sh vaultdev)/vaultdev $(GO) test -run '^$$' -bench PKIMint -benchtime 2000x ./vault/

# 100 bundles from a root whose key is in a file and in a SoftHSM2 token, side by side.
bench-hsm:
	$(GO) test -run '^$$' -bench Mint100 -benchtime 10x ./kms/

# Install into 3 real clusters, concurrently and sequentially.
bench-k8s:
	K8S_TESTENV_BIN=$$(tools/build.sh k8s-testenv) $(GO) test -run '^$$' -bench Install3Clusters -benchtime 20x ./k8s/

# 20 kube-apiservers (about 6 GB of memory) behind 50 ms of RTT: status, rotate and
# root rotate on one cluster vs on all 20, wall and CPU time, peak RSS.
bench-mesh:
	K8S_TESTENV_BIN=$$(tools/build.sh k8s-testenv) $(GO) test -run '^$$' -bench MeshOf20 -benchtime 3x -timeout 40m ./cmd/meshpki/

bench-openssl: build
	scripts/bench-mint.sh

demo: build
	scripts/demo.sh

# Two or three local clusters, mint, install, status, stop: the whole product.
demo-mesh: build
	K8S_TESTENV_BIN=$$(tools/build.sh k8s-testenv) MESHPKI=bin/meshpki scripts/demo-mesh.sh

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 60s -fuzzminimizetime 20x ./ca/

# Static binaries for linux and darwin on amd64 and arm64, a tar.gz per platform,
# a CycloneDX SBOM per binary and a SHA-256 checksums file, in dist/release.
release:
	$(DIST) release $(STAMP) -out dist/release

# The HSM build (docs/hsm.md): cgo binaries for linux/amd64 and linux/arm64 that load a
# vendor's PKCS#11 module, meshpki-hsm_* in dist/release (arm64 on an amd64 machine
# needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross).
release-hsm:
	$(DIST) release -hsm $(STAMP) -out dist/release

# The container image, built with no daemon and no base image (docs: README, Install):
# an OCI layout (linux/amd64 + linux/arm64) and a `docker load` tarball per platform, in dist/image.
image:
	$(DIST) image $(STAMP) -out dist/image

# The HSM image (tag VERSION-hsm): the HSM build with the glibc it and a vendor's module need.
image-hsm:
	$(DIST) image -hsm $(STAMP) -out dist/image

# deploy/cronjob.yaml, generated from the Helm chart deploy/chart/meshpki.
manifests:
	$(DIST) manifests

clean:
	rm -rf bin dist

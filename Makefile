# containerd-shim-runc-v2-robust — see README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin
SHIM      := $(BIN)/containerd-shim-runc-v2-robust
UPSTREAM  := $(BIN)/upstream/containerd-shim-runc-v2
CONTAINERD17 := $(BIN)/containerd-1.7/containerd
GOTEST    ?= $(GO) test

.PHONY: all deps build upstream containerd17 install test unit e2e ops vet demo bench clean FORCE

all: build

build: $(SHIM)

# Shims are built as containerd's own Makefile builds them: static, no cgo
# (SHIM_CGO_ENABLED=0), the same for ours and for upstream's baseline.
SHIM_BUILD := CGO_ENABLED=0 $(GO) build -trimpath

$(SHIM): FORCE
	$(SHIM_BUILD) -o $@ ./cmd/containerd-shim-runc-v2-robust

# Upstream's runc shim from the same containerd module version: the baseline.
upstream: $(UPSTREAM)
$(UPSTREAM): go.mod go.sum
	$(SHIM_BUILD) -ldflags "-X github.com/containerd/containerd/version.Version=$$($(GO) list -m -f '{{.Version}}' github.com/containerd/containerd)" \
		-o $@ github.com/containerd/containerd/cmd/containerd-shim-runc-v2

# containerd 1.7.x built from the same module graph (a separate tools module).
containerd17: $(CONTAINERD17)
$(CONTAINERD17): tests/containerd17/go.mod tests/containerd17/go.sum tests/containerd17/main.go
	cd tests/containerd17 && $(GO) build -trimpath -tags "no_btrfs no_devmapper no_zfs" -o ../../$@ .

# Debian's containerd, runc and busybox-static, installed when missing (root).
deps:
	@missing=""; \
	for p in containerd:containerd runc:runc busybox:busybox-static; do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-runc-v2-robust

# tests/cri and tests/containerd17 are modules of their own (their gRPC and
# containerd daemon dependencies stay out of the shim's module graph).
vet:
	$(GO) vet ./...
	cd tests/cri && $(GO) vet ./...
	@test -z "$$(gofmt -l cmd shim bundle cgroups tests)" || { gofmt -l cmd shim bundle cgroups tests; echo "gofmt: files above need formatting"; exit 1; }

# Unit tests: real mounts, real cgroups, real processes (root).
unit:
	$(GOTEST) -count=1 ./bundle/... ./cgroups/... ./shim/...

# End-to-end: private containerd daemons + real runc, ours and upstream's shim.
# Both daemons: Debian's containerd 1.6 (E2E_CONTAINERD unset) and 1.7 built
# from the module graph. Each run takes ~3 min on 2 cores; both always run, and
# the target fails if either did. tests/out/side-by-side.md gets both tables.
E2E_CONTAINERD16 ?= /usr/bin/containerd
e2e: build upstream containerd17
	@status=0; \
	echo "=== e2e: containerd 1.6 ($(E2E_CONTAINERD16))"; \
	E2E_CONTAINERD=$(E2E_CONTAINERD16) $(GOTEST) -count=1 -v -timeout 20m ./tests/e2e/ || status=1; \
	echo "=== e2e: containerd 1.7 ($(CONTAINERD17))"; \
	E2E_CONTAINERD=$(CURDIR)/$(CONTAINERD17) $(GOTEST) -count=1 -v -timeout 20m ./tests/e2e/ || status=1; \
	exit $$status

# Operators' side end-to-end: delete by hand, gc, reports, metrics, against a
# private containerd (E2E_CONTAINERD, default Debian's) with upstream's orphans.
ops: build upstream
	$(GOTEST) -count=1 -v -timeout 20m ./tests/ops/

# Kubernetes path: pods driven through containerd's CRI plugin as kubelet
# drives them, handlers `runc` (upstream's shim) and `robust` (ours) side by
# side, against Debian's containerd 1.6 and containerd 1.7 in one run (~1 min
# on 2 cores). tests/out/cri-side-by-side.md gets what each handler left.
.PHONY: cri
cri: build upstream containerd17
	cd tests/cri && $(GOTEST) -count=1 -v -timeout 20m .

test: deps vet unit e2e ops cri

demo: deps build upstream
	$(GO) run ./tests/demo

# Benchmark of issue 4: ours vs upstream's shim on a private containerd, in
# one run (~1.5 min on 2 cores); BENCH_FLAGS=-quick for a short one. Prints
# the figures and ratios; writes tests/out/bench.json. See BENCHMARKS.md.
bench: build upstream
	$(GO) run ./tests/bench $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)

FORCE:

# containerd-shim-runc-v2-robust — see README.md.
GO        ?= go
PREFIX    ?= /usr/local
BIN       := bin
SHIM      := $(BIN)/containerd-shim-runc-v2-robust
GOTEST    ?= $(GO) test
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)

# The containerd lines the product supports and is tested on. 1.6 is
# Debian's package (/usr/bin/containerd and its containerd-shim-runc-v2);
# the others are built from the module graph by the tools modules in
# tests/daemons (bin/containerd-X.Y/containerd and containerd-shim-runc-v2,
# the same version's upstream shim: our delegate and the baseline).
CONTAINERD16 := /usr/bin/containerd
DAEMONS      := 1.7 2.3 2.4
daemon_bin    = $(BIN)/containerd-$(1)/containerd
# containerd binaries of every line, 1.6 first.
CONTAINERDS  := $(CONTAINERD16) $(foreach v,$(DAEMONS),$(CURDIR)/$(call daemon_bin,$(v)))

.PHONY: all deps daemons build install test unit e2e ops vet demo bench clean FORCE

all: build

build: $(SHIM)

# Shims are built as containerd's own Makefile builds them: static, no cgo.
SHIM_BUILD := CGO_ENABLED=0 $(GO) build -trimpath

$(SHIM): FORCE
	$(SHIM_BUILD) -ldflags "-X github.com/shimrobust/containerd-shim-runc-v2-robust/cli.Version=$(VERSION)" -o $@ ./cmd/containerd-shim-runc-v2-robust

# containerd 1.7, 2.3 and 2.4 with their own runc shims (~4 min each on 2
# cores when Go's build cache is cold; seconds when it is warm).
daemons: $(foreach v,$(DAEMONS),$(call daemon_bin,$(v)))
$(BIN)/containerd-%/containerd: tests/daemons/build.sh FORCE
	@dir=tests/daemons/containerd$(subst .,,$*); test -d $$dir || { echo "no tools module $$dir" >&2; exit 1; }; \
	if [ -x $@ ] && [ -x $(@D)/containerd-shim-runc-v2 ] && [ -z "$$(find $$dir -newer $@ -type f)" ]; then exit 0; fi; \
	tests/daemons/build.sh $$dir $(CURDIR)/$(@D)

# Debian's containerd, runc, busybox-static, systemd and dbus, installed
# when missing (root); then the daemons built from the module graph.
deps: debian-deps systemd-deps daemons
.PHONY: debian-deps
debian-deps:
	@missing=""; \
	for p in containerd:containerd runc:runc busybox:busybox-static lsof:lsof; do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${p%%:*} >/dev/null 2>&1 || missing="$$missing $${p#*:}"; \
	done; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

install: build
	install -D -m 0755 $(SHIM) $(DESTDIR)$(PREFIX)/bin/containerd-shim-runc-v2-robust

# tests/cri and tests/daemons/* are modules of their own (their gRPC and
# containerd daemon dependencies stay out of the shim's module graph).
PKGS := cli delegate deletion liveness ops bundle cgroups systemdunit mounttable internal cmd install
vet:
	$(GO) vet ./...
	cd tests/cri && $(GO) vet ./...
	@test -z "$$(gofmt -l $(PKGS) cmd tests)" || { gofmt -l $(PKGS) cmd tests; echo "gofmt: files above need formatting"; exit 1; }

# Unit tests: real mounts, real cgroups, real processes (root).
unit:
	$(GOTEST) -count=1 $(foreach p,$(PKGS),./$(p)/...) ./tests/harness/ ./tools/results/

# End-to-end: a private containerd of every supported line with real runc,
# ours and that line's upstream shim side by side (upstream's is also our
# delegate). Each run takes ~3 min on 2 cores; all always run, and the
# target fails if any did. tests/out/side-by-side.md gets every table.
e2e: build daemons
	@status=0; \
	for c in $(CONTAINERDS); do \
		echo "=== e2e: containerd $$c"; \
		E2E_CONTAINERD=$$c $(GOTEST) -count=1 -v -timeout 20m ./tests/e2e/ || status=1; \
	done; exit $$status

# Operators' side end-to-end: delete by hand, gc, reports, metrics, against a
# private containerd of every line with upstream's orphans.
ops: build daemons
	@status=0; \
	for c in $(CONTAINERDS); do \
		echo "=== ops: containerd $$c"; \
		E2E_CONTAINERD=$$c $(GOTEST) -count=1 -v -timeout 20m ./tests/ops/ || status=1; \
	done; exit $$status

# Kubernetes path: pods driven through containerd's CRI plugin as kubelet
# drives them, handlers `runc` (upstream's shim) and `robust` (ours) side by
# side, on every line. tests/out/cri-side-by-side.md gets what each left.
.PHONY: cri
cri: build daemons
	cd tests/cri && $(GOTEST) -count=1 -v -timeout 30m -skip '^TestInstall$$' .

# install/uninstall end to end (issue 20): on every line, a private
# containerd whose main file is that line's own `containerd config default`
# (private paths), restarted by install's --restart-command; both modes, a
# pod through CRI started through our binary, uninstall byte-identical, a
# containerd that does not come back rolled back. ~1.5 min on 2 cores.
.PHONY: install-e2e
install-e2e: build daemons
	cd tests/cri && $(GOTEST) -count=1 -v -timeout 10m -run '^TestInstall$$' .

# The .deb end to end (issue 20 item 3; tests/deb): tools/release.sh for
# amd64 only into bin/deb-e2e (`make release` is unchanged), then that .deb
# installed, reinstalled, upgraded and purged with dpkg in an isolated
# Debian 12 root: overlayfs over / with a tmpfs upper dir in a private mount
# namespace, chrooted; the host's root is never written. Fails, never skips.
# ~30 s on 2 cores with a warm build cache.
.PHONY: deb-e2e
deb-e2e:
	ARCHES=amd64 OUT=$(BIN)/deb-e2e VERSION=$(VERSION) GO=$(GO) tools/release.sh
	DEB_E2E_DIR=$(CURDIR)/$(BIN)/deb-e2e $(GOTEST) -count=1 -v -timeout 10m ./tests/deb/

# Release artefacts into bin/release (tools/release.sh, ~2 min on 2 cores):
# static linux/amd64 and linux/arm64 binaries (CGO_ENABLED=0, -trimpath,
# the build's version ldflags), a CycloneDX SBOM of each from the module
# graph (cyclonedx-gomod, pinned by the tools module tools/sbom), a .deb per
# architecture built with dpkg-deb (/usr/bin, the gc units installed
# disabled, docs; never edits containerd's configuration) checked with
# dpkg-deb --info/--contents, and SHA256SUMS. Not part of `make test`.
.PHONY: release
release:
	VERSION=$(VERSION) GO=$(GO) tools/release.sh

# Everything, on every supported containerd line; fails, never skips.
test: deps vet unit fuzz-short e2e ops cri install-e2e deb-e2e systemd interrupt peer

demo: deps build
	$(GO) run ./tests/demo

# Benchmarks: ours vs upstream's shim on a private containerd, in one run;
# BENCH_FLAGS=-quick for a short one. Prints the figures and ratios; writes
# tests/out/bench.json. See BENCHMARKS.md.
bench: build daemons
	$(GO) run ./tests/bench $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)

FORCE:

# Interrupted deletes and hung shims (issue 11): our shim built with
# -tags failpoint (by the suite itself), its delete SIGKILLed at every step
# boundary and at random instants, then run again; two deletes and a gc
# racing; a stopped shim and a containerd restart. On containerd 1.6
# (Debian's) and 2.4; under a minute each on 2 cores. Each prints its
# figures ("interrupt figures: ...").
INTERRUPT_CONTAINERDS := $(CONTAINERD16) $(CURDIR)/$(call daemon_bin,2.4)
.PHONY: interrupt
interrupt: $(call daemon_bin,2.4)
	@status=0; \
	for c in $(INTERRUPT_CONTAINERDS); do \
		echo "=== interrupt: containerd $$c"; \
		E2E_CONTAINERD=$$c $(GOTEST) -count=1 -v -timeout 10m ./tests/interrupt/ || status=1; \
	done; exit $$status

# Fuzzing (issue 11, hostile and garbage task directories): Go native fuzz
# targets of everything the delete path parses (bundle: a whole task
# directory, RemoveDeadSocket; cgroups: Find's evidence against the real and
# synthetic mount tables, /proc/<pid>/stat and /proc/<pid>/cgroup). `fuzz`
# runs each target for $(FUZZTIME) and copies the new corpus entries Go
# keeps in its cache into <pkg>/testdata/fuzz/<Target>/, so that the corpus
# is kept in the repository (commit them); a failing input is written there
# by go test itself. `fuzz-short` (for `make test`) runs each target for a
# number of executions, about 5 s of it on a quiet 2-core machine (the
# number after the target's name), and keeps nothing: a count, not a time,
# because Go 1.26's fuzz coordinator can fail a target that found nothing
# with "context deadline exceeded" when a -fuzztime duration ends under load
# (golang/go#75804, fixed in Go 1.27); a long `make fuzz` may still meet it
# at its very end (no failing input is written then). Both run every target
# and fail if any failed. The fixtures live in $(FUZZTMPDIR) (a tmpfs: 4x
# the executions of a disk); new inputs are minimized for at most
# $(FUZZMINIMIZETIME).
FUZZTIME         ?= 10m
FUZZSHORT        ?= 0
FUZZMINIMIZETIME ?= 2s
FUZZKEEP         ?= 1
FUZZTMPDIR       ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo $${TMPDIR:-/tmp})
FUZZTARGETS      := bundle:FuzzLoad:5000 bundle:FuzzRemoveDeadSocket:15000 \
	cgroups:FuzzFind:15000 cgroups:FuzzFindMounts:300000 cgroups:FuzzParseStat:300000 cgroups:FuzzParseProcCgroup:300000
.PHONY: fuzz fuzz-short
fuzz:
	@status=0; cache=$$($(GO) env GOCACHE)/fuzz; \
	for t in $(FUZZTARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; budget=$(FUZZTIME); \
		[ "$(FUZZSHORT)" = 1 ] && budget=$${rest#*:}x; \
		echo "=== fuzz $$pkg $$fn for $$budget"; \
		TMPDIR=$(FUZZTMPDIR) $(GOTEST) -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$budget \
			-fuzzminimizetime $(FUZZMINIMIZETIME) ./$$pkg/ || status=1; \
		[ "$(FUZZKEEP)" = 1 ] || continue; \
		src=$$cache/$$($(GO) list ./$$pkg)/$$fn; dst=$$pkg/testdata/fuzz/$$fn; \
		mkdir -p $$dst; new=0; \
		for f in $$src/*; do \
			[ -f "$$f" ] && [ ! -e "$$dst/$${f##*/}" ] && cp "$$f" "$$dst/" && new=$$((new+1)); \
		done; \
		echo "=== $$fn: $$new new corpus entries kept in $$dst"; \
	done; exit $$status

fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZSHORT=1 FUZZKEEP=0

# The production node (issue 10): runc's systemd cgroup driver under a real,
# private systemd (PID 1 of its own namespaces; tests/harness/systemd.go),
# containerd 1.6 (Debian's) and 2.4 with upstream's shim side by side, and
# contrib/systemd's gc service and timer (~1 min on 2 cores).
# tests/out/systemd-side-by-side.md gets upstream's and our results.
# tests/systemd/deps.sh installs Debian's systemd and dbus when missing.
.PHONY: systemd systemd-deps
systemd-deps:
	tests/systemd/deps.sh
systemd: systemd-deps build $(call daemon_bin,2.4)
	$(GOTEST) -count=1 -v -timeout 10m ./tests/systemd/

# Peer suite (issue 16): containerd's OWN integration tests, compiled from
# the module graph (tests/peer/containerdXY: 1.7.35, 2.3.7, 2.4.2; ~7 min
# cold on 2 cores, seconds warm), run on a private containerd of each line
# with upstream's shim and then with ours installed as the runc shim, in
# the same run: the CRI tests about shims, sandboxes and restarts
# (integration/), and on 2.x integration/client (1.7's is a module the
# proxy does not serve). Offline: images from busybox-static served on
# 127.0.0.1, CNI from Debian's containernetworking-plugins. Fails when ours
# fails a test upstream passes or a suite cannot run; tests failing for
# both are listed. tests/out/peer-<line>.md gets each line's table.
.PHONY: peer
peer: build daemons
	cd tests/peer && $(GO) run . -repo $(CURDIR)

# The production node (issue 18): the suites inside a booted Debian 12 node
# (systemd 252 as PID 1, only the unified cgroup v2 hierarchy with every
# controller, Debian's kernel 6.1), QEMU in software emulation (TCG) where
# /dev/kvm is absent. tests/node/image.sh builds the image from Debian's
# packages (debootstrap from the mirror apt uses here; ~6 min cold), cached
# in /var/cache/robust-node keyed by the recipe's hash. One boot per
# containerd line (Debian's 1.6.20, in the image; 2.4.2, copied in) runs
# tests/e2e, tests/interrupt and tests/node/v2 with runc's cgroupfs and
# systemd drivers; the last boot also tests/systemd and deletion's
# uninterruptible-shim tests. A test that skips in the node fails.
# tests/out/node/ gets the consoles, side-by-side tables and results.md.
# tests/node/deps.sh installs qemu-system-x86 and debootstrap when missing.
# Measured under TCG on 2 cores: two boots of ~28 min each (boot to suite
# 33-45 s), ~57 min in all plus the image when cold; not in `make test`
# (over its ~20 min budget). NODE_LINES, NODE_DRIVERS, NODE_SUITES and
# NODE_RUN narrow a run while developing (announced loudly).
.PHONY: node node-deps
node-deps:
	tests/node/deps.sh
node: node-deps build $(call daemon_bin,2.4)
	$(GOTEST) -count=1 -v -timeout 120m ./tests/node/

# Results (issue 17): docs/results.md rendered by tools/results from the
# rows the suites write as JSON lines into $RESULTS_DIR when it is set (a
# relative path is from the repository root; unset: nothing written), never
# copied by hand. E.g. `make e2e interrupt RESULTS_DIR=tests/out/results`,
# then `make results`. The document names the runs, commands and commit.
RESULTS_DIR ?= $(CURDIR)/tests/out/results
# Every suite run by make writes its rows there, so that `make test` (and
# CI) leaves what `make results` renders.
export RESULTS_DIR
.PHONY: results
results:
	$(GO) run ./tools/results -dir $(RESULTS_DIR) -o docs/results.md -command "make results"

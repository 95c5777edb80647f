package main

import (
	"os"
	"os/exec"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// buildInfo is what was measured: the commit, whether the product's
// sources differed from it, and each binary's size and linking.
type buildInfo struct {
	Commit string `json:"commit"`
	// Dirty lists the product's source files (every package of the shim
	// binary, go.mod, go.sum) that differ from Commit: the binary was
	// built from them, not from the commit alone.
	Dirty      []string `json:"dirty,omitempty"`
	OursBytes  int64    `json:"ours_bytes"`
	OursStatic bool     `json:"ours_static"`
	// Upstream is each line's upstream shim, in the order of the lines.
	Upstream []binaryInfo `json:"upstream"`
}

// binaryInfo is one upstream shim.
type binaryInfo struct {
	Line   string `json:"line"`
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`
	Static bool   `json:"static"`
}

// productPaths are the sources of our binary.
var productPaths = []string{"cmd", "cli", "delegate", "deletion", "liveness", "ops", "bundle", "cgroups", "internal", "go.mod", "go.sum"}

// describeBuild reads the repository at root and the binaries.
func describeBuild(cfg config) buildInfo {
	b := buildInfo{Commit: "unknown"}
	if out, err := exec.Command("git", "-C", cfg.Root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		b.Commit = strings.TrimSpace(string(out))
	}
	out, err := exec.Command("git", append([]string{"-C", cfg.Root, "status", "--porcelain", "--"}, productPaths...)...).Output()
	if err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasSuffix(l, "_test.go") && !strings.Contains(l, "testdata") {
				b.Dirty = append(b.Dirty, l)
			}
		}
	}
	if fi, err := os.Stat(cfg.Ours); err == nil {
		b.OursBytes = fi.Size()
	}
	b.OursStatic = harness.StaticBinary(cfg.Ours) == nil
	for _, l := range cfg.Lines {
		bi := binaryInfo{Line: l.Name, Path: l.Upstream, Static: harness.StaticBinary(l.Upstream) == nil}
		if fi, err := os.Stat(l.Upstream); err == nil {
			bi.Bytes = fi.Size()
		}
		b.Upstream = append(b.Upstream, bi)
	}
	return b
}

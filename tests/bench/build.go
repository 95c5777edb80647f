package main

import (
	"os"
	"os/exec"
	"strings"
)

// buildInfo is what was measured: the commit, whether the shim's sources
// differed from it, and the size of each binary.
type buildInfo struct {
	Commit string `json:"commit"`
	// Dirty lists the shim's source files (cmd, shim, bundle, cgroups,
	// go.mod, go.sum) that differ from Commit: the binary was built from
	// them, not from the commit alone.
	Dirty         []string `json:"dirty,omitempty"`
	OursBytes     int64    `json:"ours_bytes"`
	UpstreamBytes int64    `json:"upstream_bytes"`
}

// describeBuild reads the repository at root and the binaries' sizes.
func describeBuild(root, ours, upstream string) buildInfo {
	b := buildInfo{Commit: "unknown"}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		b.Commit = strings.TrimSpace(string(out))
	}
	out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--",
		"cmd", "shim", "bundle", "cgroups", "go.mod", "go.sum").Output()
	if err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				b.Dirty = append(b.Dirty, l)
			}
		}
	}
	if fi, err := os.Stat(ours); err == nil {
		b.OursBytes = fi.Size()
	}
	if fi, err := os.Stat(upstream); err == nil {
		b.UpstreamBytes = fi.Size()
	}
	return b
}

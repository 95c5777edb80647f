package cri

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// The Kubernetes end-to-end test: a private containerd with its CRI plugin,
// on every supported containerd line (Debian's 1.6; 1.7, 2.3 and 2.4 built
// from the module graph by `make daemons`), driven through the CRI v1 API
// as kubelet drives it, with two runtime handlers side by side — `runc`
// (upstream's shim of that line) and `robust` (ours, which delegates to the
// same upstream shim installed next to it) — configured as the README tells
// users to: configuration version 2 on 1.x, version 3 on 2.x. Only `robust`
// is asserted; what each handler left behind is printed side by side and
// written to tests/out/cri-side-by-side.md, a section per line and set-up.
//
// Environment (all optional):
//
//	CRI_CONTAINERD16   Debian's containerd 1.6 (default /usr/bin/containerd)
//	CRI_CONTAINERD17   containerd 1.7 (default bin/containerd-1.7/containerd)
//	CRI_CONTAINERD23   containerd 2.3 (default bin/containerd-2.3/containerd)
//	CRI_CONTAINERD24   containerd 2.4 (default bin/containerd-2.4/containerd)
//	                   (1.7, 2.3 and 2.4 are built with `make daemons` when
//	                   missing and not named here)
//	CRI_UPSTREAM_SHIM16, CRI_UPSTREAM_SHIM17, CRI_UPSTREAM_SHIM23,
//	CRI_UPSTREAM_SHIM24
//	                   each line's upstream shim: the `runc` handler's shim
//	                   and our delegate (default containerd-shim-runc-v2
//	                   next to that line's containerd binary)
//	CRI_SHIM           our shim (default bin/containerd-shim-runc-v2-robust)
//	CRI_BUSYBOX        static busybox (default: busybox on PATH)
//	CRI_OUT            directory of the side-by-side output (default tests/out)
//
// The test never skips: when it cannot run (not root, a binary or package
// missing, a daemon does not start) it fails and says why.

// line is one containerd line the suite runs on.
type line struct {
	name   string // "1.6"
	env    string // CRI_CONTAINERD16
	binary string // default containerd binary ("" = under bin/containerd-<name>)
}

var lines = []line{
	{name: "1.6", env: "CRI_CONTAINERD16", binary: "/usr/bin/containerd"},
	{name: "1.7", env: "CRI_CONTAINERD17"},
	{name: "2.3", env: "CRI_CONTAINERD23"},
	{name: "2.4", env: "CRI_CONTAINERD24"},
}

// daemonUnderTest is one containerd binary the suite runs against, with
// that line's upstream shim and the set-up of the robust handler.
type daemonUnderTest struct {
	line     string
	binary   string
	upstream string
	version  string
	setup    Setup
}

var (
	repoRoot     string
	busybox      string
	shimRobust   string
	daemons      []daemonUnderTest
	imageArchive []byte

	// cgroupRoot is the cgroup parent of every pod of this run (cgroupfs
	// style, below each hierarchy's root), removed at the end.
	cgroupRoot = fmt.Sprintf("/cri-e2e-%d", os.Getpid())
)

func TestMain(m *testing.M) {
	if err := setUp(); err != nil {
		fmt.Fprintf(os.Stderr, "\n*** CRI SUITE CANNOT RUN: %v\n*** (this is a failure, not a skip)\nFAIL\n", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := RemoveCgroupTree(cgroupRoot); err != nil {
		fmt.Fprintf(os.Stderr, "removing the pods' cgroup parent %s: %v\n", cgroupRoot, err)
		code = 1
	}
	// runc's state directory of the namespace, when this run left it empty.
	_ = os.Remove(filepath.Join(harness.DefaultRuncRoot, Namespace))
	if err := writeSideBySide(); err != nil {
		fmt.Fprintf(os.Stderr, "side-by-side output: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// setUp checks every prerequisite, builds what `make` can build, and makes
// the image; any error is fatal for the whole suite.
func setUp() error {
	if os.Geteuid() != 0 {
		return errors.New("the suite needs root (containerd, runc, mounts, cgroups)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	repoRoot = root
	if err := harness.CheckTools("install Debian's runc: make deps", "runc"); err != nil {
		return err
	}
	if busybox, err = harness.FindBusybox(os.Getenv("CRI_BUSYBOX"), "install busybox-static: make deps", "install busybox-static: make deps"); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		return fmt.Errorf("no cgroup filesystem: %w", err)
	}

	shimRobust = harness.EnvOr("CRI_SHIM", filepath.Join(repoRoot, "bin", ShimRobustBinary))
	type binaries struct{ containerd, upstream string }
	paths := make([]binaries, len(lines))
	var builds []string
	for i, l := range lines {
		def := l.binary
		if def == "" {
			def = filepath.Join(repoRoot, "bin", "containerd-"+l.name, "containerd")
		}
		uenv := "CRI_UPSTREAM_SHIM" + strings.TrimPrefix(l.env, "CRI_CONTAINERD")
		c := harness.EnvOr(l.env, def)
		u := harness.EnvOr(uenv, filepath.Join(filepath.Dir(c), ShimUpstreamBinary))
		paths[i] = binaries{c, u}
		if l.binary == "" && os.Getenv(l.env) == "" && (harness.Executable(c) != nil || harness.Executable(u) != nil) {
			builds = append(builds, c)
		}
	}
	targets := map[string][]string{}
	if harness.Executable(shimRobust) != nil && os.Getenv("CRI_SHIM") == "" {
		targets["build"] = []string{shimRobust}
	}
	if len(builds) > 0 {
		targets["daemons"] = builds
	}
	for _, target := range []string{"build", "daemons"} {
		if len(targets[target]) == 0 {
			continue
		}
		fmt.Fprintf(os.Stderr, "*** %v missing: running `make %s` (make cri builds it first)\n", targets[target], target)
		cmd := exec.Command("make", "-C", repoRoot, target)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("make %s: %w", target, err)
		}
	}
	bins := []harness.Binary{{What: "our shim", Path: shimRobust, Hint: "make build"}}
	for i, l := range lines {
		hint := "make daemons"
		if l.binary != "" {
			hint = "install containerd: make deps"
		}
		bins = append(bins,
			harness.Binary{What: "containerd " + l.name, Path: paths[i].containerd, Hint: hint},
			harness.Binary{What: "containerd " + l.name + "'s upstream shim", Path: paths[i].upstream, Hint: hint})
	}
	if err := harness.CheckBinaries(bins...); err != nil {
		return err
	}
	for i, l := range lines {
		v, err := binaryVersion(paths[i].containerd)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimPrefix(v, "v"), l.name+".") {
			return fmt.Errorf("%s is containerd %s, not %s (%s)", paths[i].containerd, v, l.name, l.env)
		}
		setups, err := setupsFor(v)
		if err != nil {
			return err
		}
		for _, setup := range setups {
			daemons = append(daemons, daemonUnderTest{line: l.name, binary: paths[i].containerd,
				upstream: paths[i].upstream, version: v, setup: setup})
		}
	}
	if imageArchive, err = BuildImage("", busybox, ImageRef); err != nil {
		return fmt.Errorf("build the test image: %w", err)
	}
	return nil
}

// setupsFor is the set-ups of the robust handler the suite runs on a
// containerd version: the one the README recommends (SetupFor) and, on 2.x,
// also the other one, as the README gives both for configuration version 3.
func setupsFor(version string) ([]Setup, error) {
	rec, err := SetupFor(version)
	if err != nil {
		return nil, err
	}
	if cv, err := ConfigVersionFor(version); err != nil || cv < ConfigV3 {
		return []Setup{rec}, err
	}
	return []Setup{SetupRuntimePath, SetupRuntimeType}, nil
}

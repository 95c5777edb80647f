package cri

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// The Kubernetes end-to-end test: a private containerd with its CRI plugin
// (Debian's 1.6 and 1.7 built from the module graph), driven through the CRI
// v1 API as kubelet drives it, with two runtime handlers side by side —
// `runc` (upstream's shim) and `robust` (ours) — configured as the README
// tells users to. Only `robust` is asserted; what each handler left behind
// is printed side by side and written to tests/out/cri-side-by-side.md.
//
// Environment (all optional):
//
//	CRI_CONTAINERD16   Debian's containerd (default /usr/bin/containerd)
//	CRI_CONTAINERD17   containerd 1.7 (default bin/containerd-1.7/containerd,
//	                   built with `make containerd17` when missing)
//	CRI_SHIM           our shim (default bin/containerd-shim-runc-v2-robust)
//	CRI_UPSTREAM_SHIM  upstream's (default bin/upstream/containerd-shim-runc-v2)
//	CRI_BUSYBOX        static busybox (default: busybox on PATH)
//	CRI_OUT            directory of the side-by-side output (default tests/out)
//
// The test never skips: when it cannot run (not root, a binary or package
// missing, a daemon does not start) it fails and says why.

// daemonUnderTest is one containerd binary the suite runs against.
type daemonUnderTest struct {
	binary  string
	version string
}

var (
	repoRoot     string
	busybox      string
	shimRobust   string
	shimUpstream string
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
	shimUpstream = harness.EnvOr("CRI_UPSTREAM_SHIM", filepath.Join(repoRoot, "bin", "upstream", ShimUpstreamBinary))
	c16 := harness.EnvOr("CRI_CONTAINERD16", "/usr/bin/containerd")
	c17 := harness.EnvOr("CRI_CONTAINERD17", filepath.Join(repoRoot, "bin", "containerd-1.7", "containerd"))
	for _, b := range []struct{ path, env, target string }{
		{shimRobust, "CRI_SHIM", "build"},
		{shimUpstream, "CRI_UPSTREAM_SHIM", "upstream"},
		{c17, "CRI_CONTAINERD17", "containerd17"},
	} {
		if harness.Executable(b.path) == nil || os.Getenv(b.env) != "" {
			continue
		}
		fmt.Fprintf(os.Stderr, "*** %s is missing: running `make %s` (make cri builds it first)\n", b.path, b.target)
		cmd := exec.Command("make", "-C", repoRoot, b.target)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("make %s: %w", b.target, err)
		}
	}
	if err := harness.CheckBinaries(
		harness.Binary{What: "our shim", Path: shimRobust, Hint: "make build"},
		harness.Binary{What: "upstream's shim", Path: shimUpstream, Hint: "make upstream"},
		harness.Binary{What: "Debian's containerd", Path: c16, Hint: "install containerd: make deps"},
		harness.Binary{What: "containerd 1.7", Path: c17, Hint: "make containerd17"},
	); err != nil {
		return err
	}
	for _, bin := range []string{c16, c17} {
		v, err := binaryVersion(bin)
		if err != nil {
			return err
		}
		daemons = append(daemons, daemonUnderTest{binary: bin, version: v})
	}
	if imageArchive, err = BuildImage("", busybox, ImageRef); err != nil {
		return fmt.Errorf("build the test image: %w", err)
	}
	return nil
}

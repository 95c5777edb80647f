package cri

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

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
	path := os.Getenv("PATH") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if _, err := lookPathIn("runc", path); err != nil {
		return errors.New("runc not found on PATH (install Debian's runc: make deps)")
	}
	if busybox = os.Getenv("CRI_BUSYBOX"); busybox == "" {
		if busybox, err = exec.LookPath("busybox"); err != nil {
			return errors.New("busybox not found (install busybox-static: make deps)")
		}
	}
	if err := staticBinary(busybox); err != nil {
		return fmt.Errorf("busybox %s: %w (install busybox-static: make deps)", busybox, err)
	}
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		return fmt.Errorf("no cgroup filesystem: %w", err)
	}

	shimRobust = envOr("CRI_SHIM", filepath.Join(repoRoot, "bin", ShimRobustBinary))
	shimUpstream = envOr("CRI_UPSTREAM_SHIM", filepath.Join(repoRoot, "bin", "upstream", ShimUpstreamBinary))
	c16 := envOr("CRI_CONTAINERD16", "/usr/bin/containerd")
	c17 := envOr("CRI_CONTAINERD17", filepath.Join(repoRoot, "bin", "containerd-1.7", "containerd"))
	for _, b := range []struct{ path, env, target string }{
		{shimRobust, "CRI_SHIM", "build"},
		{shimUpstream, "CRI_UPSTREAM_SHIM", "upstream"},
		{c17, "CRI_CONTAINERD17", "containerd17"},
	} {
		if executable(b.path) == nil || os.Getenv(b.env) != "" {
			continue
		}
		fmt.Fprintf(os.Stderr, "*** %s is missing: running `make %s` (make cri builds it first)\n", b.path, b.target)
		cmd := exec.Command("make", "-C", repoRoot, b.target)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("make %s: %w", b.target, err)
		}
	}
	for _, b := range []struct{ what, path, hint string }{
		{"our shim", shimRobust, "make build"},
		{"upstream's shim", shimUpstream, "make upstream"},
		{"Debian's containerd", c16, "install containerd: make deps"},
		{"containerd 1.7", c17, "make containerd17"},
	} {
		if err := executable(b.path); err != nil {
			return fmt.Errorf("%s: %w (%s)", b.what, err, b.hint)
		}
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

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// staticBinary fails for a dynamically linked ELF: the image holds busybox
// alone, without a dynamic loader.
func staticBinary(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}

func lookPathIn(name, path string) (string, error) {
	for _, dir := range strings.Split(path, ":") {
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

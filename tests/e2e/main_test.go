package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// shimUnderTest is one column of the side-by-side table.
type shimUnderTest struct {
	name     string // "upstream" or "ours"
	runtime  string // runtime name containerd resolves to the binary
	binary   string
	asserted bool // only ours is asserted
}

var (
	repoRoot   string
	busybox    string
	containerd string
	shims      []shimUnderTest
	namespace  = fmt.Sprintf("e2e-%d", os.Getpid())

	// failpointShim is our binary built with the failpoint tag (see
	// internal/failpoint), installed for runtimeFailpoint; the daemons
	// run with failpointEnv, which only that binary reads.
	failpointShim string

	// shared is the daemon the cases share (host cgroup view). The cases
	// that stop, kill or restart it run one after another and leave it
	// serving.
	shared *harness.Daemon

	// resultsRun describes this run in the results file (RESULTS_DIR).
	resultsRun harness.ResultsRun
)

func TestMain(m *testing.M) {
	if err := setUp(); err != nil {
		fmt.Fprintf(os.Stderr, "\n*** E2E SUITE CANNOT RUN: %v\n*** (this is a failure, not a skip)\nFAIL\n", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := writeTable(); err != nil {
		fmt.Fprintf(os.Stderr, "side-by-side table: %v\n", err)
		code = 1
	}
	if err := writeResults(code != 0); err != nil {
		fmt.Fprintf(os.Stderr, "results: %v\n", err)
		code = 1
	}
	if err := shared.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the shared daemon: %v\n", err)
	}
	_ = os.Remove(filepath.Join(harness.DefaultRuncRoot, namespace))
	_ = os.RemoveAll(filepath.Dir(failpointShim))
	if err := harness.RemoveNamespaceCgroups(namespace); err != nil {
		fmt.Fprintf(os.Stderr, "namespace cgroups: %v\n", err)
	}
	os.Exit(code)
}

// setUp checks every prerequisite and starts the shared daemon; any error
// is fatal for the whole suite.
func setUp() error {
	env, err := harness.FindE2EEnv("runc", "unshare", "nsenter", "mount", "umount")
	if err != nil {
		return err
	}
	repoRoot, containerd, busybox = env.RepoRoot, env.Containerd, env.Busybox
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		return fmt.Errorf("no cgroup filesystem: %w", err)
	}
	all := []shimUnderTest{
		{name: "upstream", runtime: harness.RuntimeUpstream, binary: env.Upstream},
		{name: "ours", runtime: harness.RuntimeRobust, binary: env.Ours, asserted: true},
	}
	only := os.Getenv("E2E_ONLY")
	for _, s := range all {
		if only != "" && only != s.name {
			fmt.Fprintf(os.Stderr, "*** E2E_ONLY=%s: the %s shim is NOT tested in this run\n", only, s.name)
			continue
		}
		if err := harness.CheckBinaries(harness.Binary{What: s.name + " shim", Path: s.binary, Hint: "run `make build daemons`"}); err != nil {
			return err
		}
		shims = append(shims, s)
	}
	if len(shims) == 0 {
		return fmt.Errorf("E2E_ONLY=%q selects no shim (ours, upstream)", only)
	}
	if failpointShim, err = buildFailpointShim(); err != nil {
		return err
	}
	os.Setenv(failpointEnvName, failpointEnvValue)
	d, err := newDaemon(false)
	if err != nil {
		return err
	}
	shared = d
	resultsRun = harness.NewResultsRun("e2e", repoRoot, containerd, d.Version)
	fmt.Printf("e2e: containerd %s (%s), namespace %s, daemon dir %s\n", d.Version, containerd, namespace, d.Dir)
	return nil
}

// Our binary with failpoints: runtime name, and what the daemons' (and so
// the shims') environment says. Only mount points whose path holds
// stuckMount fail to unmount, and only in that binary.
const (
	runtimeFailpoint  = "io.containerd.runc.v2-robustfp"
	failpointEnvName  = "CONTAINERD_SHIM_ROBUST_FAILPOINTS"
	stuckMount        = "stuck-mount"
	failpointEnvValue = "unmount=" + stuckMount
)

// buildFailpointShim builds our binary with the failpoint tag into a
// temporary directory, static like the product.
func buildFailpointShim() (string, error) {
	dir, err := os.MkdirTemp("", "e2e-failpoint-")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, harness.ShimBinaryName(runtimeFailpoint))
	cmd := exec.Command("go", "build", "-tags", "failpoint", "-trimpath", "-o", out, "./cmd/containerd-shim-runc-v2-robust")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the failpoint shim: %v\n%s", err, b)
	}
	return out, nil
}

// newDaemon makes and starts a daemon with every shim under test installed.
func newDaemon(cgroup2View bool) (*harness.Daemon, error) {
	cfg := harness.DaemonConfig{Binary: containerd, Shims: map[string]string{}, CgroupV2View: cgroup2View}
	for _, s := range shims {
		cfg.Shims[s.runtime] = s.binary
	}
	cfg.Shims[runtimeFailpoint] = failpointShim
	return harness.StartDaemon(context.Background(), cfg)
}

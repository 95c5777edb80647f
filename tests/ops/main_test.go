package ops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

var (
	repoRoot   string
	busybox    string
	containerd string
	ours       string // our binary, the CLI under test
	upstream   string

	// daemon is the private containerd every test uses, with both shims.
	daemon *harness.Daemon
	// containerdMetrics is the metrics directory in containerd's
	// environment: deletes containerd runs with our shim write there.
	containerdMetrics string

	nsA = fmt.Sprintf("ops-a-%d", os.Getpid())
	nsB = fmt.Sprintf("ops-b-%d", os.Getpid())
)

func TestMain(m *testing.M) {
	if err := setUp(); err != nil {
		fmt.Fprintf(os.Stderr, "\n*** OPS SUITE CANNOT RUN: %v\n*** (this is a failure, not a skip)\nFAIL\n", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := daemon.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the daemon: %v\n", err)
	}
	_ = os.RemoveAll(containerdMetrics)
	for _, ns := range []string{nsA, nsB} {
		_ = os.Remove(filepath.Join(harness.DefaultRuncRoot, ns))
		if err := harness.RemoveNamespaceCgroups(ns); err != nil {
			fmt.Fprintf(os.Stderr, "namespace cgroups: %v\n", err)
		}
	}
	os.Exit(code)
}

// setUp checks every prerequisite and starts the daemon; any error is fatal
// for the whole suite.
func setUp() error {
	env, err := harness.FindE2EEnv("runc", "mount", "umount")
	if err != nil {
		return err
	}
	repoRoot, containerd, busybox, ours, upstream = env.RepoRoot, env.Containerd, env.Busybox, env.Ours, env.Upstream
	for _, b := range []string{ours, upstream} {
		if err := harness.CheckBinaries(harness.Binary{What: "shim", Path: b, Hint: "run `make build daemons`"}); err != nil {
			return err
		}
	}
	// containerd passes its environment to every shim command it runs
	// (and takes it from this process at every start): with this set, the
	// deletes it runs with our shim write metrics there. The commands the
	// tests run get their own environment (see run).
	if containerdMetrics, err = os.MkdirTemp("", "ops-containerd-metrics-"); err != nil {
		return err
	}
	os.Unsetenv(cli.EnvStateDir)
	os.Setenv(ops.EnvMetricsDir, containerdMetrics)
	d, err := harness.StartDaemon(context.Background(), harness.DaemonConfig{
		Binary: containerd,
		Shims:  map[string]string{harness.RuntimeUpstream: upstream, harness.RuntimeRobust: ours},
	})
	if err != nil {
		return err
	}
	daemon = d
	fmt.Printf("ops: containerd %s (%s), namespaces %s %s, daemon dir %s\n", d.Version, containerd, nsA, nsB, d.Dir)
	return nil
}

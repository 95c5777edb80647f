package interrupt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

var (
	repoRoot   string
	busybox    string
	containerd string
	upstream   string
	// ours is our shim built with -tags failpoint.
	ours      string
	namespace = fmt.Sprintf("interrupt-%d", os.Getpid())

	// shared is the daemon every test uses; tests that stop or restart it
	// leave it serving.
	shared *harness.Daemon

	figures = &tally{reached: map[string]int{}}
)

// failpointsEnv is internal/failpoint's environment variable.
const failpointsEnv = "CONTAINERD_SHIM_ROBUST_FAILPOINTS"

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "interrupt-shim-")
	if err != nil {
		cannotRun(err)
	}
	if err := setUp(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		cannotRun(err)
	}
	stopReaper, err := harness.StartReaper()
	if err != nil {
		cannotRun(fmt.Errorf("reaper: %w", err))
	}
	code := m.Run()
	stopReaper()
	fmt.Printf("interrupt figures (containerd %s): %s\n", shared.Version, figures)
	if err := shared.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the shared daemon: %v\n", err)
	}
	nss := []string{namespace}
	for i := range races {
		nss = append(nss, raceNamespace(i))
	}
	for _, ns := range nss {
		_ = os.Remove(filepath.Join(harness.DefaultRuncRoot, ns))
		if err := harness.RemoveNamespaceCgroups(ns); err != nil {
			fmt.Fprintf(os.Stderr, "namespace cgroups: %v\n", err)
		}
	}
	_ = os.RemoveAll(tmp)
	os.Exit(code)
}

func cannotRun(err error) {
	fmt.Fprintf(os.Stderr, "\n*** INTERRUPT SUITE CANNOT RUN: %v\n*** (this is a failure, not a skip)\nFAIL\n", err)
	os.Exit(2)
}

// setUp checks every prerequisite, builds our shim with failpoints into
// dir, and starts the shared daemon; any error is fatal for the suite.
func setUp(dir string) error {
	env, err := harness.FindE2EEnv("runc", "mount", "umount", "nsenter")
	if err != nil {
		return err
	}
	repoRoot, containerd, busybox, upstream = env.RepoRoot, env.Containerd, env.Busybox, env.Upstream
	if err := harness.CheckBinaries(harness.Binary{What: "upstream shim (our delegate)", Path: upstream, Hint: "run `make daemons`, or set E2E_UPSTREAM_SHIM"}); err != nil {
		return err
	}
	ours = filepath.Join(dir, "containerd-shim-runc-v2-robust")
	build := exec.Command("go", "build", "-tags", "failpoint", "-trimpath", "-o", ours, "./cmd/containerd-shim-runc-v2-robust")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build our shim with -tags failpoint: %w\n%s", err, out)
	}
	d, err := harness.StartDaemon(context.Background(), harness.DaemonConfig{Binary: containerd, Shims: map[string]string{
		harness.RuntimeRobust:   ours,
		harness.RuntimeUpstream: upstream,
	}})
	if err != nil {
		return err
	}
	shared = d
	fmt.Printf("interrupt: containerd %s (%s), namespace %s, daemon dir %s, shim %s\n", d.Version, containerd, namespace, d.Dir, ours)
	return nil
}

// randomKills is how many deletes get a real SIGKILL at a random instant.
func randomKills() int {
	if n, err := strconv.Atoi(os.Getenv("INTERRUPT_RANDOM")); err == nil && n >= 0 {
		return n
	}
	return 40
}

// tally is the figures of one run: what was tried and what was lost.
type tally struct {
	mu sync.Mutex
	// boundaries: deletes SIGKILLed by a failpoint at a step boundary.
	boundaries int
	// randomKilled: real SIGKILLs that hit a running delete;
	// randomFinished: the delete had finished before the kill.
	randomKilled, randomFinished int
	// reached counts the random kills by how far the delete got (progress).
	reached map[string]int
	// races: tasks deleted by two deletes and a gc at once.
	races int
	// hung: stopped shims killed by containerd's delete.
	hung int
	// leftovers, lostData, wronglySignalled: what went wrong (must be 0).
	leftovers, lostData, wronglySignalled int
}

func (t *tally) add(f func(t *tally)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(t)
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var reached []string
	for _, k := range []string{"nothing done", "shim killed", "container killed", "released", "unmounted", "task directory removed"} {
		if n := t.reached[k]; n > 0 {
			reached = append(reached, fmt.Sprintf("%s %d", k, n))
		}
	}
	return fmt.Sprintf("%d step-boundary kills, %d random-instant kills (reached: %s; +%d deletes finished before the kill), %d races of two deletes and gc, %d hung shims; left behind %d, host data lost %d, wrongly signalled %d",
		t.boundaries, t.randomKilled, strings.Join(reached, ", "), t.randomFinished, t.races, t.hung, t.leftovers, t.lostData, t.wronglySignalled)
}

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

	// resultsRun describes this run in the results file (RESULTS_DIR).
	resultsRun harness.ResultsRun
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
	run := resultsRun
	run.Failed = code != 0
	if path, err := harness.WriteResults(repoRoot, run, figures.records()); err != nil {
		fmt.Fprintf(os.Stderr, "results: %v\n", err)
		code = 1
	} else if path != "" {
		fmt.Printf("results: figures written to %s\n", path)
	}
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
	resultsRun = harness.NewResultsRun("interrupt", repoRoot, containerd, d.Version)
	fmt.Printf("interrupt: containerd %s (%s), namespace %s, daemon dir %s, shim %s\n", d.Version, containerd, namespace, d.Dir, ours)
	return nil
}

// defaultRandomKills is how many deletes get a real SIGKILL at a random
// instant, and the least INTERRUPT_RANDOM may ask for: with fewer, the
// floors TestRandomInstants asserts (minInside, minStages) would fail by
// chance, and none at all would test nothing.
const defaultRandomKills = 40

// randomKills is how many deletes get a real SIGKILL at a random instant:
// $INTERRUPT_RANDOM, else defaultRandomKills. A value that is not a number
// of at least defaultRandomKills is an error, never a silent pass.
func randomKills() (int, error) {
	v := os.Getenv("INTERRUPT_RANDOM")
	if v == "" {
		return defaultRandomKills, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < defaultRandomKills {
		return 0, fmt.Errorf("INTERRUPT_RANDOM=%q: want a number of random-instant kills of at least %d (fewer cannot show that the kills land inside deletes); unset it for %d", v, defaultRandomKills, defaultRandomKills)
	}
	return n, nil
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

// stageOrder is the stages of progress, in the order a delete reaches them.
var stageOrder = []string{"nothing done", "shim killed", "container killed", "released", "unmounted", "task directory removed"}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var reached []string
	for _, k := range stageOrder {
		if n := t.reached[k]; n > 0 {
			reached = append(reached, fmt.Sprintf("%s %d", k, n))
		}
	}
	return fmt.Sprintf("%d step-boundary kills, %d random-instant kills (reached: %s; +%d deletes finished before the kill), %d races of two deletes and gc, %d hung shims; left behind %d, host data lost %d, wrongly signalled %d",
		t.boundaries, t.randomKilled, strings.Join(reached, ", "), t.randomFinished, t.races, t.hung, t.leftovers, t.lostData, t.wronglySignalled)
}

// records is the figures as results records (harness.WriteResults).
func (t *tally) records() []any {
	t.mu.Lock()
	defer t.mu.Unlock()
	var reached []string
	for _, k := range stageOrder {
		if n := t.reached[k]; n > 0 {
			reached = append(reached, fmt.Sprintf("%s %d", k, n))
		}
	}
	fig := func(name string, v any) any {
		return harness.ResultsFigure{Kind: "figure", Name: name, Value: fmt.Sprint(v)}
	}
	return []any{
		fig("deletes SIGKILLed at a step boundary", t.boundaries),
		fig("random-instant SIGKILLs that landed inside a delete", fmt.Sprintf("%d of %d", t.randomKilled, t.randomKilled+t.randomFinished)),
		fig("how far the interrupted deletes got", strings.Join(reached, ", ")),
		fig("two deletes and a gc racing", t.races),
		fig("hung (stopped) shims killed", t.hung),
		fig("left behind (must be 0)", t.leftovers),
		fig("host data lost (must be 0)", t.lostData),
		fig("wrongly signalled (must be 0)", t.wronglySignalled),
	}
}

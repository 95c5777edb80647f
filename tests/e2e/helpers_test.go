package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Bounds of the asynchronous outcomes. containerd runs the shim's delete
// with a 5 s timeout; everything after it is local bookkeeping.
const (
	exitTimeout = 30 * time.Second // TaskExit after the shim is killed
	taskTimeout = 15 * time.Second // task gone from containerd after TaskExit
	settle      = 3 * time.Second  // residue polled until empty, at most this long
)

// exitStatusKilled is what a delete reports for a container it killed:
// 128 + SIGKILL. containerd publishes 255 instead when the delete failed.
const exitStatusKilled = 137

// damage is one way of breaking a task directory before its shim dies.
type damage struct {
	name  string
	apply func(c *harness.Container) error // nil: nothing but the kill
	// harm, when set, also breaks the bundle (after apply) and returns a
	// check of collateral damage, run after the delete: "" when none.
	harm func(t *testing.T, c *harness.Container) (check func() string)
	// poststopHook gives the container the harness's OCI poststop hook;
	// its runs are reported, and for an asserted shim it must have run
	// exactly once and seen the bundle intact (checkHookRuns).
	poststopHook bool
}

func removeFiles(names ...string) func(c *harness.Container) error {
	return func(c *harness.Container) error {
		for _, n := range names {
			if err := c.RemoveFile(n); err != nil {
				return err
			}
		}
		return nil
	}
}

func corruptFile(name string) func(c *harness.Container) error {
	return func(c *harness.Container) error { return c.CorruptFile(name) }
}

func bindHostDir(rel string) func(c *harness.Container) error {
	return func(c *harness.Container) error {
		_, err := c.BindHostDir(rel)
		return err
	}
}

// bystander starts a process outside the container (a child of the test,
// reaped by its Wait) and writes its pid into init.pid, as if the
// container's init pid had been reused. The delete must leave it alone;
// with removeState, runc's state (the proof of the real init) is gone too.
func bystander(removeState bool) func(t *testing.T, c *harness.Container) func() string {
	return func(t *testing.T, c *harness.Container) func() string {
		t.Helper()
		cmd := exec.Command("sleep", "1000003")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		p, err := harness.RecordProc(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.PointInitPidAt(p.Pid); err != nil {
			t.Fatal(err)
		}
		if removeState {
			if err := c.RemoveRuncState(); err != nil {
				t.Fatal(err)
			}
		}
		return func() string {
			if !p.Alive() {
				return fmt.Sprintf("bystander %s KILLED", p)
			}
			return ""
		}
	}
}

var (
	plain          = damage{name: "shim SIGKILL"}
	runtimeMissing = damage{name: "runtime missing", apply: removeFiles(harness.RuntimeFile)}
)

var nonID = regexp.MustCompile(`[^a-z0-9]+`)

// caseID makes a container id (containerd's identifier rule) from a case
// name and a shim name.
func caseID(caseName, shim string) string {
	id := strings.Trim(nonID.ReplaceAllString(strings.ToLower(caseName), "-"), "-") + "-" + shim
	if len(id) > 76 {
		id = id[len(id)-76:]
	}
	return id
}

// startContainer runs a container with shim s on d and registers a cleanup
// that removes whatever the case leaves, pass or fail. Each opt adjusts the
// container's configuration before it starts.
func startContainer(t *testing.T, d *harness.Daemon, s shimUnderTest, id string, opts ...func(*harness.ContainerConfig)) *harness.Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := harness.ContainerConfig{
		Namespace:   namespace,
		ID:          id,
		Runtime:     s.runtime,
		Busybox:     busybox,
		NoResources: d.CgroupV2View(),
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	c, err := d.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("start container: %v\n--- containerd log (tail) ---\n%s", err, d.LogTail(30))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.Cleanup(ctx); err != nil {
			t.Errorf("harness cleanup of %s: %v", id, err)
		}
	})
	// Ours runs no task service of its own: the process serving the task
	// must be upstream's shim of the daemon's line, its delegate.
	if cfg.Runtime != harness.RuntimeUpstream {
		if want := d.ShimPath(harness.RuntimeUpstream); c.ShimExe != want {
			t.Fatalf("the task is served by %s, want the delegate %s", c.ShimExe, want)
		}
	}
	if d.CgroupV2View() {
		for _, cg := range c.Cgroups {
			if !strings.HasPrefix(cg, harness.UnifiedRoot()+"/") {
				t.Fatalf("cgroup v2 view: container has a cgroup outside the unified hierarchy: %v", c.Cgroups)
			}
		}
	}
	if len(c.Procs) < 4 {
		t.Fatalf("recorded %d processes, want init, 2 children and the exec'd one: %v", len(c.Procs), c.Procs)
	}
	return c
}

// outcome is a table cell: what was left, and how the delete went.
func outcome(r harness.Residue, notes ...string) string {
	s := r.Summary()
	var n []string
	for _, x := range notes {
		if x != "" {
			n = append(n, x)
		}
	}
	if len(n) > 0 {
		s += " (" + strings.Join(n, "; ") + ")"
	}
	return s
}

// exitNote describes the TaskExit containerd published.
func exitNote(ev *eventstypes.TaskExit, seen bool) string {
	switch {
	case !seen:
		return "no TaskExit"
	case ev.ExitStatus == 255:
		return "delete failed"
	case ev.ExitStatus != exitStatusKilled:
		return fmt.Sprintf("TaskExit status %d", ev.ExitStatus)
	}
	return ""
}

// checkExit asserts the TaskExit of a delete that worked.
func checkExit(t *testing.T, ev *eventstypes.TaskExit, seen bool) {
	t.Helper()
	switch {
	case !seen:
		t.Errorf("no TaskExit event within %s of the shim's death", exitTimeout)
	case ev.ExitStatus != exitStatusKilled:
		t.Errorf("TaskExit status %d, want %d (255: containerd saw the delete fail)", ev.ExitStatus, exitStatusKilled)
	}
}

// hookIntact is the line the poststop hook writes when it saw the task
// directory intact: config.json, the rootfs directory and the rootfs still
// mounted.
const hookIntact = "config=yes rootfs=yes mounted=yes"

// hookNote describes the poststop hook's runs for the table.
func hookNote(runs []string, err error) string {
	switch {
	case err != nil:
		return "poststop hook: " + err.Error()
	case len(runs) == 0:
		return "poststop hook never ran"
	case len(runs) == 1:
		return "poststop hook ran once: " + runs[0]
	}
	return fmt.Sprintf("poststop hook ran %d times: %s", len(runs), strings.Join(runs, "; "))
}

// checkHookRuns asserts that the poststop hook ran exactly once and saw
// the task directory intact.
func checkHookRuns(t *testing.T, runs []string, err error) {
	t.Helper()
	switch {
	case err != nil:
		t.Errorf("poststop hook runs: %v", err)
	case len(runs) != 1:
		t.Errorf("poststop hook ran %d times, want exactly once: %q", len(runs), runs)
	case runs[0] != hookIntact:
		t.Errorf("poststop hook saw %q, want %q (the task directory must outlive the runtime's delete)", runs[0], hookIntact)
	}
}

// checkClean asserts that nothing is left.
func checkClean(t *testing.T, r harness.Residue) {
	t.Helper()
	if len(r) > 0 {
		t.Errorf("left behind:\n%s", r)
	}
}

// runKilled is the shape of most cases: start a container, break its
// bundle, SIGKILL its shim, let containerd run the shim's delete, and take
// the residue. Only an asserted shim fails the test.
func runKilled(t *testing.T, d *harness.Daemon, s shimUnderTest, caseName string, dmg damage) {
	t.Helper()
	ctx := context.Background()
	var opts []func(*harness.ContainerConfig)
	if dmg.poststopHook {
		opts = append(opts, func(cfg *harness.ContainerConfig) { cfg.PoststopHook = true })
	}
	c := startContainer(t, d, s, caseID(caseName, s.name), opts...)
	if dmg.apply != nil {
		if err := dmg.apply(c); err != nil {
			t.Fatalf("damage %q: %v", dmg.name, err)
		}
	}
	var collateral func() string
	if dmg.harm != nil {
		collateral = dmg.harm(t, c)
	}
	_, logOff := d.LogSince(0)
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	ev, seen := d.WaitExit(namespace, c.Cfg.ID, exitTimeout)
	c.WaitTaskGone(ctx, taskTimeout)
	r := waitResidue(ctx, s, c, true)
	harmed := ""
	if collateral != nil {
		harmed = collateral()
	}
	var (
		hookRuns []string
		hookErr  error
		hooked   string
	)
	if dmg.poststopHook {
		hookRuns, hookErr = c.PoststopHookRuns()
		hooked = hookNote(hookRuns, hookErr)
	}
	cell := outcome(r, exitNote(ev, seen), harmed, hooked)
	results.record(caseName, s.name, cell)
	if !s.asserted {
		t.Logf("%s with %s: %s", caseName, s.name, cell)
		return
	}
	checkExit(t, ev, seen)
	checkClean(t, r)
	if dmg.poststopHook {
		checkHookRuns(t, hookRuns, hookErr)
	}
	if harmed != "" {
		t.Errorf("collateral damage: %s", harmed)
	}
	if t.Failed() {
		log, _ := d.LogSince(logOff)
		t.Logf("containerd log since the shim was killed:\n%s", log)
	}
}

// residueSelfCheck runs the self-check on daemon d.
func residueSelfCheck(t *testing.T, d *harness.Daemon) {
	t.Helper()
	s := shims[0]
	c := startContainer(t, d, s, caseID("harness self-check "+filepath.Base(d.Dir), s.name))
	src, err := c.BindHostDir("volume")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("changed behind the harness's back\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.Residue(context.Background(), true)
	for _, kind := range []string{
		harness.KindBindSource, harness.KindBundle, harness.KindWorkDir, harness.KindRuncState,
		harness.KindProcess, harness.KindCgroup, harness.KindMount, harness.KindSocket, harness.KindTask,
	} {
		if len(r.Of(kind)) == 0 {
			t.Errorf("the residue of a live container misses its %s:\n%s", kind, r)
		}
	}
	if got, want := len(r.Of(harness.KindProcess)), len(c.Procs); got != want {
		t.Errorf("residue names %d live processes, want all %d recorded: %v", got, want, c.Procs)
	}
	if got, want := len(r.Of(harness.KindCgroup)), len(c.Cgroups); got != want {
		t.Errorf("residue names %d cgroups, want all %d recorded: %v", got, want, c.Cgroups)
	}
	if got := len(r.Of(harness.KindMount)); got < 2 {
		t.Errorf("residue names %d mounts under the bundle, want rootfs and volume:\n%s", got, r)
	}
	reused := c.Init
	reused.Start++
	if reused.Alive() {
		t.Errorf("pid %d with another start time passes for the recorded init", reused.Pid)
	}
}

// waitResidue is the residue of c after the delete: for the asserted shim,
// polled until clean (at most settle); for the others, until clean or
// unchanged for reportStable.
func waitResidue(ctx context.Context, s shimUnderTest, c *harness.Container, checkTask bool) harness.Residue {
	if s.asserted {
		return c.WaitClean(ctx, settle, checkTask)
	}
	return c.WaitSettled(ctx, settle, reportStable, checkTask)
}

// reportStable is how long an unasserted shim's residue must stay the same
// to count as what it leaves.
const reportStable = 750 * time.Millisecond

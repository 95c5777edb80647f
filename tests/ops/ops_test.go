package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/promtest"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// node is one container of TestNodeSweep: how its task is broken while
// containerd is down, and what the sweep must do with it.
type node struct {
	name      string
	ns        string
	damage    func(t *testing.T, c *harness.Container) // nil: shim killed, nothing else
	keepsShim bool                                     // the shim stays alive
	swept     bool                                     // gc deletes it
	c         *harness.Container
}

func removeFiles(names ...string) func(t *testing.T, c *harness.Container) {
	return func(t *testing.T, c *harness.Container) {
		t.Helper()
		for _, n := range names {
			if err := c.RemoveFile(n); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// removeTaskDirectory takes the task directory away (as `rm -rf` after an
// unmount would), leaving runc's state, the cgroups and the processes:
// residue outside task directories.
func removeTaskDirectory(t *testing.T, c *harness.Container) {
	t.Helper()
	for _, m := range mountsUnder(t, c.Bundle) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Fatalf("unmount %s: %v", m, err)
		}
	}
	if left := mountsUnder(t, c.Bundle); len(left) > 0 {
		t.Fatalf("mounts left under %s: %v", c.Bundle, left)
	}
	if err := os.RemoveAll(c.Bundle); err != nil {
		t.Fatal(err)
	}
}

// TestNodeSweep: a node with tasks of UPSTREAM's shim. containerd is
// stopped; every shim but one is killed and the task directories are
// broken (files missing or corrupt, a host directory bind-mounted in the
// rootfs, one task directory removed by hand). Then, with containerd still
// down: a delete by hand of the live task is refused; gc --dry-run changes
// nothing; a delete by hand from another directory finds its task through
// --state-dir; one gc run deletes every orphan and reports the residue it
// cannot attribute to a task directory without touching it; the live task
// is untouched; the metrics file parses. Then containerd comes back and
// knows none of the swept tasks.
func TestNodeSweep(t *testing.T) {
	nodes := []*node{
		{name: "plain", ns: nsA, swept: true},
		{name: "runtime-missing", ns: nsA, damage: removeFiles(harness.RuntimeFile), swept: true},
		{name: "options-corrupt", ns: nsA, damage: func(t *testing.T, c *harness.Container) {
			if err := c.CorruptFile(harness.OptionsFile); err != nil {
				t.Fatal(err)
			}
		}, swept: true},
		{name: "live", ns: nsA, keepsShim: true},
		{name: "files-missing", ns: nsB, damage: removeFiles(harness.BundleFiles...), swept: true},
		{name: "bind-mount", ns: nsB, damage: func(t *testing.T, c *harness.Container) {
			if _, err := c.BindHostDir("rootfs/mnt/host"); err != nil {
				t.Fatal(err)
			}
		}, swept: true},
		{name: "by-hand", ns: nsB},
		{name: "ghost", ns: nsB, damage: removeTaskDirectory},
	}
	byName := map[string]*node{}
	for _, n := range nodes {
		n.c = startContainer(t, harness.RuntimeUpstream, n.ns, n.name)
		byName[n.name] = n
	}
	daemon.KeepServing(t)
	if err := daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !n.keepsShim {
			if err := n.c.KillShim(); err != nil {
				t.Fatal(err)
			}
		}
		if n.damage != nil {
			n.damage(t, n.c)
		}
	}
	ctx := context.Background()
	metrics := t.TempDir()
	env := []string{ops.EnvMetricsDir + "=" + metrics}
	live := byName["live"].c
	liveBefore := live.Residue(ctx, false).String()

	t.Run("delete by hand refuses a live shim", func(t *testing.T) {
		r := run(t, "/", env, "-namespace", nsA, "-id", "live", "delete", "--state-dir", stateDir())
		if r.code != cli.ExitRefused {
			t.Errorf("exit %d, want %d (refused)", r.code, cli.ExitRefused)
		}
		if !strings.Contains(r.stderr, "REFUSED: the shim is alive") || !strings.Contains(r.stderr, "answered containerd.task.v") || !strings.Contains(r.stderr, "-force") {
			t.Errorf("stderr does not say the shim is alive and how to force:\n%s", r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("a refused delete wrote a DeleteResponse: %q", r.stdout)
		}
		if after := live.Residue(ctx, false).String(); after != liveBefore || !live.Shim.Alive() {
			t.Errorf("the live task changed:\nbefore:\n%s\nafter:\n%s", liveBefore, after)
		}
	})

	t.Run("a live task seen from another state directory is not residue", func(t *testing.T) {
		// runc's root is shared by every containerd on the node: from an
		// empty state directory, the live task's runc state and cgroups
		// have no task directory, but its init is a shim's child.
		r := run(t, "/", env, "gc", "--state-dir", t.TempDir(), "--namespace", nsA, "--dry-run", "--format", "json")
		var g ops.GCReport
		if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
			t.Fatalf("stdout is not the JSON report: %v\n%s", err, r.stdout)
		}
		dead := map[string]bool{}
		for _, res := range g.Residue {
			if res.ID == "live" {
				t.Errorf("the live task is reported as residue: %+v", res)
			}
			if res.Kind == ops.ResidueRuncState {
				dead[res.ID] = true
			}
		}
		for _, n := range nodes {
			if n.ns == nsA && !n.keepsShim && !dead[n.name] {
				t.Errorf("%s (shim dead) not reported as residue from an empty state directory: %+v", n.name, g.Residue)
			}
		}
	})

	t.Run("gc --dry-run changes nothing", func(t *testing.T) {
		before := map[string]string{}
		for _, n := range nodes {
			before[n.name] = n.c.Residue(ctx, false).String()
		}
		r := run(t, "/", env, "gc", "--state-dir", stateDir(), "--older-than", "0s", "--dry-run")
		if r.code != cli.ExitOK || !strings.Contains(r.stdout, "dry run: nothing changed") {
			t.Errorf("text dry run: exit %d, stdout:\n%s", r.code, r.stdout)
		}
		t.Logf("text report:\n%s", r.stdout)
		r = run(t, "/", env, "gc", "--state-dir", stateDir(), "--older-than", "0s", "--dry-run", "--format", "json")
		if r.code != cli.ExitOK {
			t.Errorf("exit %d", r.code)
		}
		var g ops.GCReport
		if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
			t.Fatalf("stdout is not the JSON report: %v\n%s", err, r.stdout)
		}
		if !g.DryRun {
			t.Error("JSON report: dry_run false")
		}
		tasks := tasksOf(&g)
		for _, n := range nodes {
			tk, seen := tasks[n.ns+"/"+n.name]
			switch {
			case n.name == "ghost":
				if seen {
					t.Errorf("ghost has no task directory, yet gc lists it: %+v", tk)
				}
			case n.keepsShim:
				if tk.Status != ops.GCLive || tk.Action != ops.GCLeft {
					t.Errorf("%s: %+v, want live and left", n.name, tk)
				}
			default:
				if tk.Status != ops.GCOrphan || tk.Action != ops.GCWouldDelete || !strings.Contains(tk.Why, "shim dead") || tk.Delete != nil {
					t.Errorf("%s: %+v, want an orphan it would delete, and why", n.name, tk)
				}
			}
		}
		for _, n := range nodes {
			if after := n.c.Residue(ctx, false).String(); after != before[n.name] {
				t.Errorf("%s changed in a dry run:\nbefore:\n%s\nafter:\n%s", n.name, before[n.name], after)
			}
		}
	})

	t.Run("delete by hand from another directory finds the task", func(t *testing.T) {
		c := byName["by-hand"].c
		r := run(t, "/", env, "-namespace", nsB, "-id", "by-hand", "--state-dir", stateDir(), "--format", "json", "delete")
		if r.code != cli.ExitOK {
			t.Errorf("exit %d", r.code)
		}
		var rec ops.DeleteRecord
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil {
			t.Fatalf("stdout is not one JSON record: %v\n%q", err, r.stdout)
		}
		t.Logf("delete: %s in %.3fs: %s", rec.Result, rec.DurationSeconds, stepTimes(rec))
		if rec.Result != ops.ResultDeleted || rec.Bundle != c.Bundle || rec.Trigger != ops.TriggerManual || rec.Pid != c.Init.Pid || !slices.EqualFunc(rec.Steps, deletion.Steps, func(r ops.StepRecord, step string) bool { return r.Step == step }) || len(rec.Left) != 0 {
			t.Errorf("record: %+v", rec)
		}
		for _, s := range rec.Steps {
			if s.Outcome == deletion.OutcomeFailed || s.DurationSeconds <= 0 {
				t.Errorf("step %+v", s)
			}
		}
		if res := c.WaitClean(ctx, settle, false); len(res) > 0 {
			t.Errorf("left behind:\n%s", res)
		}
	})

	var sweep ops.GCReport
	t.Run("one gc cleans the orphans", func(t *testing.T) {
		r := run(t, "/", env, "gc", "--state-dir", stateDir(), "--older-than", "0s", "--format", "json")
		if r.code != cli.ExitOK {
			t.Errorf("exit %d, want 0", r.code)
		}
		if err := json.Unmarshal([]byte(r.stdout), &sweep); err != nil {
			t.Fatalf("stdout is not the JSON report: %v\n%s", err, r.stdout)
		}
		logDeletes(t, &sweep)
		tasks := tasksOf(&sweep)
		for _, n := range nodes {
			if !n.swept {
				continue
			}
			tk := tasks[n.ns+"/"+n.name]
			if tk.Action != ops.GCDeleted || tk.Delete == nil || tk.Delete.Result != ops.ResultDeleted || tk.Delete.Trigger != ops.TriggerGC {
				t.Errorf("%s: %+v (delete %+v)", n.name, tk, tk.Delete)
			}
			if res := n.c.WaitClean(ctx, settle, false); len(res) > 0 {
				t.Errorf("%s: left behind:\n%s", n.name, res)
			}
		}
		if tk := tasks[nsA+"/live"]; tk.Status != ops.GCLive || tk.Action != ops.GCLeft {
			t.Errorf("live: %+v", tk)
		}
		if after := live.Residue(ctx, false).String(); after != liveBefore || !live.Shim.Alive() {
			t.Errorf("the live task changed:\nbefore:\n%s\nafter:\n%s", liveBefore, after)
		}
	})

	t.Run("residue outside task directories is reported, not touched", func(t *testing.T) {
		ghost := byName["ghost"].c
		found := map[string]ops.GCResidue{}
		for _, r := range sweep.Residue {
			if r.Namespace == nsB && r.ID == "ghost" {
				found[r.Kind] = r
			}
		}
		if r, ok := found[ops.ResidueRuncState]; !ok || r.Paths[0] != ghost.RuncState {
			t.Errorf("runc state of ghost not reported: %+v", sweep.Residue)
		}
		if r, ok := found[ops.ResidueCgroup]; !ok || len(r.Paths) != len(ghost.Cgroups) {
			t.Errorf("cgroups of ghost not reported (want %d directories): %+v", len(ghost.Cgroups), found[ops.ResidueCgroup])
		}
		res := ghost.Residue(ctx, false)
		if len(res.Of(harness.KindRuncState)) != 1 || len(res.Of(harness.KindCgroup)) != len(ghost.Cgroups) || len(res.Of(harness.KindProcess)) != len(ghost.Procs) {
			t.Errorf("gc touched residue it only had to report:\n%s", res)
		}
	})

	t.Run("metrics file parses as Prometheus text", func(t *testing.T) {
		fams := promtest.Parse(t, filepath.Join(metrics, ops.MetricsFile))
		swept := 0
		for _, n := range nodes {
			if n.swept {
				swept++
			}
		}
		checkMetrics(t, fams, []metric{
			{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "gc", "result", "deleted"}, want: float64(swept)},
			{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "manual", "result", "deleted"}, want: 1},
			{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "manual", "result", "refused"}, want: 1},
			{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "gc", "result", "left"}, want: 0},
			{name: "containerd_shim_robust_delete_steps_failed_total", labels: []string{"step", "unmount"}, want: 0},
			{name: "containerd_shim_robust_delete_duration_seconds", want: float64(swept + 1)},
			{name: "containerd_shim_robust_gc_runs_total", labels: []string{"mode", "sweep"}, want: 1},
			{name: "containerd_shim_robust_gc_runs_total", labels: []string{"mode", "dry-run"}, want: 3},
			{name: "containerd_shim_robust_gc_tasks", labels: []string{"status", "orphan"}, want: float64(swept)},
			{name: "containerd_shim_robust_gc_tasks", labels: []string{"status", "live"}, want: 1},
			{name: "containerd_shim_robust_gc_oldest_orphan_age_seconds", want: 0.001, atLeast: true},
			{name: "containerd_shim_robust_gc_last_run_timestamp_seconds", want: float64(sweep.Started.Unix()), atLeast: true},
			{name: "containerd_shim_robust_residue_found", labels: []string{"kind", "runc_state"}, want: 1, atLeast: true},
			{name: "containerd_shim_robust_residue_found", labels: []string{"kind", "cgroup"}, want: 1, atLeast: true},
		})
		entries, _ := os.ReadDir(metrics)
		for _, e := range entries {
			if strings.Contains(e.Name(), ".tmp-") {
				t.Errorf("temporary file left in the metrics directory: %s", e.Name())
			}
		}
	})

	t.Run("delete by hand cleans up after a task directory removed by hand", func(t *testing.T) {
		// The residue gc reported: the same delete finds runc's state
		// without the task directory, and through it the cgroups and
		// processes. The work directory and the shim's socket are named
		// only in the task directory, and stay.
		ghost := byName["ghost"].c
		r := run(t, "/", env, "-namespace", nsB, "-id", "ghost", "--state-dir", stateDir(), "delete")
		if r.code != cli.ExitOK {
			t.Errorf("exit %d", r.code)
		}
		res := ghost.WaitClean(ctx, settle, false)
		for _, kind := range []string{harness.KindRuncState, harness.KindCgroup, harness.KindProcess, harness.KindMount, harness.KindBundle, harness.KindBindSource} {
			if left := res.Of(kind); len(left) > 0 {
				t.Errorf("left behind:\n%s", left)
			}
		}
	})

	if err := daemon.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	t.Run("containerd knows none of the swept tasks", func(t *testing.T) {
		for _, n := range nodes {
			if !n.swept && n.name != "by-hand" {
				continue
			}
			if known, err := n.c.TaskKnown(ctx); err != nil || known {
				t.Errorf("%s: containerd still knows the task (known=%v, err=%v)", n.name, known, err)
			}
		}
		if known, err := live.TaskKnown(ctx); err != nil || !known {
			t.Errorf("live: containerd lost the live task (known=%v, err=%v)", known, err)
		}
	})
}

// TestContainerdRunsOurDelete: containerd runs our delete (with -address,
// from the bundle) when our shim dies: its path is unchanged (TaskExit 137,
// nothing left) and the delete is counted in the metrics directory named in
// containerd's environment, with trigger "containerd".
func TestContainerdRunsOurDelete(t *testing.T) {
	ctx := context.Background()
	c := startContainer(t, harness.RuntimeRobust, nsA, "containerd-runs-ours")
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	ev, seen := daemon.WaitExit(nsA, c.Cfg.ID, 30*time.Second)
	switch {
	case !seen:
		t.Error("no TaskExit after the shim was killed")
	case ev.ExitStatus != 137:
		t.Errorf("TaskExit status %d, want 137", ev.ExitStatus)
	}
	c.WaitTaskGone(ctx, 15*time.Second)
	if res := c.WaitClean(ctx, settle, true); len(res) > 0 {
		t.Errorf("left behind:\n%s", res)
	}
	if log := daemon.LogTail(200); strings.Contains(log, "failed to clean up after shim disconnected") {
		t.Errorf("containerd logged a failed cleanup:\n%s", log)
	}
	fams := promtest.Parse(t, filepath.Join(containerdMetrics, ops.MetricsFile))
	checkMetrics(t, fams, []metric{
		{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "containerd", "result", "deleted"}, want: 1},
		{name: "containerd_shim_robust_deletes_total", labels: []string{"trigger", "manual", "result", "deleted"}, want: 0},
		{name: "containerd_shim_robust_delete_duration_seconds", want: 1},
	})
	if _, err := os.Stat(filepath.Join(containerdMetrics, ops.MetricsFile)); err != nil {
		t.Error(err)
	}
}

// tasksOf indexes a gc report's tasks by namespace/id.
func tasksOf(g *ops.GCReport) map[string]ops.GCTask {
	out := map[string]ops.GCTask{}
	for _, tk := range g.Tasks {
		out[tk.Namespace+"/"+tk.ID] = tk
	}
	return out
}

// stepTimes lists a delete's steps with their durations.
func stepTimes(rec ops.DeleteRecord) string {
	var parts []string
	for _, s := range rec.Steps {
		parts = append(parts, fmt.Sprintf("%s %s %.3fs", s.Step, s.Outcome, s.DurationSeconds))
	}
	return strings.Join(parts, ", ")
}

// logDeletes logs every delete of a gc report with its step durations.
func logDeletes(t *testing.T, g *ops.GCReport) {
	t.Helper()
	t.Logf("gc took %.3fs", g.DurationSeconds)
	for _, tk := range g.Tasks {
		if tk.Delete != nil {
			t.Logf("  %s/%s: %s in %.3fs: %s", tk.Namespace, tk.ID, tk.Delete.Result, tk.Delete.DurationSeconds, stepTimes(*tk.Delete))
		}
	}
}

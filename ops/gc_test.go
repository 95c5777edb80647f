package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/promtest"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// gcNode is a state directory laid out by hand: orphans, a live task, a
// young one, another shim's, one with no evidence, and residue.
type gcNode struct {
	state, runcRoot string
	ns1, ns2        string
	tasks           map[string]string // name -> task directory
	orphanProc      *exec.Cmd         // in orphan1's cgroups
	orphanCgroups   []string
	ghostInit       *exec.Cmd // init of the runc state without a task directory
	ghostCgroups    []string
}

func newGCNode(t *testing.T) *gcNode {
	t.Helper()
	n := &gcNode{
		// containerd's layout: <state>/io.containerd.runtime.v2.task.
		state:    filepath.Join(t.TempDir(), TaskStateDirName),
		runcRoot: t.TempDir(),
		ns1:      testutil.RandID("gc-a"),
		ns2:      testutil.RandID("gc-b"),
		tasks:    map[string]string{},
	}
	sockets := t.TempDir()
	dead := filepath.Join(sockets, "dead")
	testutil.DeadSocket(t, dead)
	live := filepath.Join(sockets, "live")
	testutil.Listen(t, live)
	options := fmt.Sprintf(`{"root":%q}`, n.runcRoot)

	n.orphanProc = testutil.StartSleeper(t)
	rel := "/" + n.ns1 + "/orphan1"
	n.orphanCgroups = testutil.ContainerCgroup(t, rel, n.orphanProc.Process.Pid)

	add := func(name, ns string, files map[string]string) {
		dir := filepath.Join(n.state, ns, name)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		for f, content := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n.tasks[name] = dir
	}
	add("orphan1", n.ns1, map[string]string{
		"runtime": "", "options.json": options, "address": "unix://" + dead,
		"config.json": testutil.SpecWithCgroup(t, rel), "init.pid": strconv.Itoa(n.orphanProc.Process.Pid),
	})
	add("orphan2", n.ns2, map[string]string{"runtime": ""})
	add("live", n.ns1, map[string]string{"runtime": "", "options.json": options, "address": "unix://" + live})
	add("young", n.ns2, map[string]string{"runtime": "", "address": "unix://" + dead})
	add("foreign", n.ns2, map[string]string{"shim-binary-path": "/usr/local/bin/containerd-shim-kata-v2", "address": "unix://" + dead})
	add("unknown", n.ns2, map[string]string{"address": "unix://" + dead})
	old := time.Now().Add(-2 * time.Hour)
	for name, dir := range n.tasks {
		if name == "young" {
			continue
		}
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
	}

	// containerd's half-done removal.
	if err := os.MkdirAll(filepath.Join(n.state, n.ns1, ".gone-1"), 0o711); err != nil {
		t.Fatal(err)
	}
	// runc state and cgroups of a task with no task directory.
	n.ghostInit = testutil.StartSleeper(t)
	ghost := filepath.Join(n.runcRoot, n.ns1, "ghost")
	if err := os.MkdirAll(ghost, 0o711); err != nil {
		t.Fatal(err)
	}
	// As runc writes it: the id, the init's pid and start time, the
	// cgroup configuration (bundle.ReadRuncState reads nothing less).
	st, _ := json.Marshal(map[string]any{"id": "ghost", "init_process_pid": n.ghostInit.Process.Pid, "init_process_start": testutil.StartTime(t, n.ghostInit.Process.Pid),
		"config": map[string]any{"cgroups": map[string]any{"path": "/" + n.ns1 + "/ghost"}}})
	if err := os.WriteFile(filepath.Join(ghost, "state.json"), st, 0o600); err != nil {
		t.Fatal(err)
	}
	n.ghostCgroups = testutil.ContainerCgroup(t, "/"+n.ns1+"/ghost")
	return n
}

// tree lists every path under the state directory and runc root with its
// mode and mtime, and the cgroup directories: what a dry run must not change.
func (n *gcNode) tree(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, root := range []string{n.state, n.runcRoot} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s %s %d", p, fi.Mode(), fi.ModTime().UnixNano()))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append(append([]string{}, n.orphanCgroups...), n.ghostCgroups...) {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

func (n *gcNode) mine(g *GCReport) (tasks map[string]GCTask, residue map[string]GCResidue) {
	tasks, residue = map[string]GCTask{}, map[string]GCResidue{}
	for _, tk := range g.Tasks {
		if tk.Namespace == n.ns1 || tk.Namespace == n.ns2 {
			tasks[tk.ID] = tk
		}
	}
	for _, r := range g.Residue {
		if r.Namespace == n.ns1 || r.Namespace == n.ns2 {
			residue[r.Kind+" "+r.ID] = r
		}
	}
	return tasks, residue
}

func TestGC(t *testing.T) {
	testutil.NeedRoot(t)
	n := newGCNode(t)
	metricsDir := t.TempDir()
	opts := GCOptions{StateDir: n.state, RuncRoot: n.runcRoot, OlderThan: time.Hour, Metrics: &Metrics{Dir: metricsDir}}
	want := map[string]struct {
		status GCStatus
		action GCAction // of the sweep; the dry run says "would delete" for orphans
		why    string
	}{
		"orphan1": {GCOrphan, GCDeleted, "refuses connections"},
		"orphan2": {GCOrphan, GCDeleted, "no shim address"},
		"live":    {GCLive, GCLeft, "accepted the connection"},
		"young":   {GCYoung, GCLeft, "younger than 1h0m0s"},
		"foreign": {GCSkipped, GCLeft, "not a runc v2 shim"},
		"unknown": {GCSkipped, GCLeft, "not recognisably a runc v2 task"},
	}
	checkResidue := func(t *testing.T, residue map[string]GCResidue) {
		t.Helper()
		for _, k := range []string{"partial_removal gone-1", "runc_state ghost", "cgroup ghost"} {
			if _, ok := residue[k]; !ok {
				t.Errorf("residue %q not reported; got %v", k, residue)
			}
		}
		if r := residue["runc_state ghost"]; !strings.Contains(r.Detail, "alive without a shim") {
			t.Errorf("ghost runc state: %q", r.Detail)
		}
		if r := residue["cgroup ghost"]; len(r.Paths) != len(n.ghostCgroups) {
			t.Errorf("ghost cgroup: %v, want %v", r.Paths, n.ghostCgroups)
		}
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		before := n.tree(t)
		dry := opts
		dry.DryRun = true
		g := GC(context.Background(), dry)
		t.Logf("\n%s", g.Text())
		if after := n.tree(t); strings.Join(before, "\n") != strings.Join(after, "\n") {
			t.Errorf("dry run changed the node:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
		}
		if !testutil.Alive(n.orphanProc.Process.Pid) {
			t.Error("dry run killed the orphan's process")
		}
		tasks, residue := n.mine(g)
		for id, w := range want {
			action := w.action
			if action == GCDeleted {
				action = GCWouldDelete
			}
			if tk := tasks[id]; tk.Status != w.status || tk.Action != action || !strings.Contains(tk.Why, w.why) || tk.Delete != nil {
				t.Errorf("%s: %+v, want status %s, action %s, why containing %q", id, tk, w.status, action, w.why)
			}
		}
		checkResidue(t, residue)
		if g.Failed() {
			t.Error("dry run failed")
		}
	})

	t.Run("namespace filter", func(t *testing.T) {
		one := opts
		one.DryRun, one.Namespace, one.Metrics = true, n.ns2, nil
		g := GC(context.Background(), one)
		for _, tk := range g.Tasks {
			if tk.Namespace != n.ns2 {
				t.Errorf("--namespace %s, yet gc looked at %s/%s", n.ns2, tk.Namespace, tk.ID)
			}
		}
		for _, r := range g.Residue {
			if r.Namespace != n.ns2 {
				t.Errorf("--namespace %s, yet gc reports residue of %s/%s", n.ns2, r.Namespace, r.ID)
			}
		}
		if len(g.Tasks) != 4 {
			t.Errorf("%d tasks in %s, want 4: %+v", len(g.Tasks), n.ns2, g.Tasks)
		}
	})

	t.Run("sweep deletes the orphans only", func(t *testing.T) {
		g := GC(context.Background(), opts)
		t.Logf("\n%s", g.Text())
		tasks, residue := n.mine(g)
		for id, w := range want {
			if tk := tasks[id]; tk.Status != w.status || tk.Action != w.action || !strings.Contains(tk.Why, w.why) {
				t.Errorf("%s: %+v, want status %s, action %s, why containing %q", id, tk, w.status, w.action, w.why)
			}
			_, err := os.Stat(n.tasks[id])
			if gone := err != nil; gone != (w.action == GCDeleted) {
				t.Errorf("%s: task directory gone=%v (%v)", id, gone, err)
			}
		}
		if rec := tasks["orphan1"].Delete; rec == nil || rec.Result != ResultDeleted || rec.Trigger != TriggerGC {
			t.Errorf("orphan1's delete record: %+v", rec)
		}
		if testutil.Alive(n.orphanProc.Process.Pid) {
			t.Error("the orphan's container process survived")
		}
		testutil.AssertGone(t, n.orphanCgroups...)
		checkResidue(t, residue)
		for _, p := range append([]string{filepath.Join(n.state, n.ns1, ".gone-1"), filepath.Join(n.runcRoot, n.ns1, "ghost")}, n.ghostCgroups...) {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("residue was touched: %s: %v", p, err)
			}
		}
		if !testutil.Alive(n.ghostInit.Process.Pid) {
			t.Error("the ghost's init was killed on the say-so of residue")
		}
		if g.Failed() {
			t.Error("sweep failed")
		}
		var back GCReport
		if err := json.Unmarshal(g.JSON(), &back); err != nil || len(back.Tasks) != len(g.Tasks) {
			t.Errorf("JSON round trip: %v", err)
		}

		fams := promtest.Parse(t, filepath.Join(metricsDir, MetricsFile))
		for _, c := range []struct {
			name   string
			labels []string
			min    float64
		}{
			{metricDeletes, []string{"trigger", "gc", "result", "deleted"}, 2},
			{metricGCRuns, []string{"mode", "sweep"}, 1},
			{metricGCRuns, []string{"mode", "dry-run"}, 1},
			{metricGCTasks, []string{"status", "live"}, 1},
			{metricGCOldest, nil, 7000},
			{metricResidue, []string{"kind", "cgroup"}, 1},
			{metricResidue, []string{"kind", "runc_state"}, 1},
			{metricResidue, []string{"kind", "partial_removal"}, 1},
		} {
			if got, ok := fams.Value(c.name, c.labels...); !ok || got < c.min {
				t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, got, ok, c.min)
			}
		}
	})
}

package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// orphans is a state directory of orphaned runc v2 task directories laid
// out by hand, as gc_test.go's orphan1 and ghost are: every liveEvery-th
// has a live container process (a sleeper) in its own cgroup in every
// hierarchy, proven by cgroup membership (config.json's cgroupsPath and
// init.pid) or, for every other one of them, by runc-style state (pid and
// start time, in the runc root named by options.json, whose runtime binary
// does not exist); every tenth has a tmpfs mounted on its rootfs.
type orphans struct {
	state, runcRoot string
	nss             []string
	dirs            []string // task directories
	runcStates      []string // runc state directories
	cgroups         []string // every cgroup directory made
	mounts          []string
	procs           []*exec.Cmd
}

// makeOrphans lays out n orphans under state, spread over the namespaces
// nss, ids o-00000, o-00001, ...; their address is the socket dead
// (see testutil.DeadSocket). Directories are made old enough for any
// --older-than below an hour. Cleanup kills what is left.
func makeOrphans(t *testing.T, state, runcRoot, dead string, nss []string, n, liveEvery int) *orphans {
	return makeOrphansMounted(t, state, runcRoot, dead, nss, n, liveEvery, 10)
}

// makeOrphansMounted is makeOrphans with a tmpfs on the rootfs of every
// mountEvery-th orphan (0: none). It takes a testing.TB: BenchmarkGCScale
// lays out orphans with it too.
func makeOrphansMounted(t testing.TB, state, runcRoot, dead string, nss []string, n, liveEvery, mountEvery int) *orphans {
	t.Helper()
	o := &orphans{state: state, runcRoot: runcRoot, nss: nss}
	old := time.Now().Add(-2 * time.Hour)
	for i := range n {
		ns, id := nss[i%len(nss)], fmt.Sprintf("o-%05d", i)
		dir := filepath.Join(state, ns, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{"runtime": "", "address": "unix://" + dead}
		if liveEvery > 0 && i%liveEvery == 0 {
			rel := "/" + ns + "/" + id
			p := startReapedSleeper(t)
			pid := p.Process.Pid
			o.procs = append(o.procs, p)
			o.cgroups = append(o.cgroups, testutil.ContainerCgroup(t, rel, pid)...)
			spec, _ := json.Marshal(&specs.Spec{Version: specs.Version, Linux: &specs.Linux{CgroupsPath: rel}})
			files["config.json"] = string(spec)
			files["init.pid"] = strconv.Itoa(pid)
			files["options.json"] = fmt.Sprintf(`{"root":%q}`, runcRoot)
			if (i/liveEvery)%2 == 1 {
				// runc-style state: pid and start time.
				files["options.json"] = fmt.Sprintf(`{"root":%q,"binary_name":"/nonexistent/runc"}`, runcRoot)
				sd := filepath.Join(runcRoot, ns, id)
				if err := os.MkdirAll(sd, 0o711); err != nil {
					t.Fatal(err)
				}
				st, _ := json.Marshal(map[string]any{
					"id": id, "init_process_pid": pid, "init_process_start": testutil.StartTime(t, pid),
					"created": time.Now(), "config": map[string]any{"rootfs": filepath.Join(dir, "rootfs"), "cgroups": map[string]any{"path": rel}},
					"cgroup_paths": map[string]string{},
				})
				if err := os.WriteFile(filepath.Join(sd, "state.json"), st, 0o600); err != nil {
					t.Fatal(err)
				}
				o.runcStates = append(o.runcStates, sd)
			}
		}
		for f, content := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if mountEvery > 0 && i%mountEvery == mountEvery/2 {
			target := filepath.Join(dir, "rootfs")
			if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatal(err)
			}
			o.mounts = append(o.mounts, target)
			t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
		}
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		o.dirs = append(o.dirs, dir)
	}
	return o
}

// startReapedSleeper starts `sleep` and reaps it as soon as it dies, as a
// container's init is reaped; Cleanup kills it.
func startReapedSleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd
}

// assertClean fails the test for anything of the orphans still on the
// machine: task directory, runc state, cgroup, mount, live process.
func (o *orphans) assertClean(t testing.TB) {
	t.Helper()
	left := 0
	for _, group := range [][]string{o.dirs, o.runcStates, o.cgroups} {
		for _, p := range group {
			if _, err := os.Lstat(p); err == nil {
				left++
				if left <= 10 {
					t.Errorf("left: %s", p)
				}
			}
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, m := range o.mounts {
			if strings.Contains(string(mi), " "+m+" ") {
				t.Errorf("still mounted: %s", m)
			}
		}
	}
	for _, p := range o.procs {
		if testutil.Alive(p.Process.Pid) {
			t.Errorf("container process %d survived", p.Process.Pid)
		}
	}
	if left > 10 {
		t.Errorf("... %d paths left in all", left)
	}
}

// pids are the sleepers' pids, for normalizing reports.
func (o *orphans) pids() []int {
	out := make([]int, len(o.procs))
	for i, p := range o.procs {
		out[i] = p.Process.Pid
	}
	return out
}

// timingKeys are the JSON keys whose values depend on when and how fast
// gc ran, not on what it did.
var timingKeys = map[string]bool{
	"started": true, "duration_seconds": true, "age_seconds": true,
	"oldest_orphan_age_seconds": true, "exited_at": true,
}

// normalizedReport is the JSON report with timings dropped, the residue
// of other namespaces than nss (other tests on the machine share the
// default runc root and the cgroup hierarchies) left out, and the given
// pids replaced by "PID": what two sweeps of the same layout must agree
// on.
func normalizedReport(t *testing.T, g *GCReport, nss []string, pids []int) string {
	t.Helper()
	c := *g
	c.Residue = nil
	for _, r := range g.Residue {
		if slices.Contains(nss, r.Namespace) {
			c.Residue = append(c.Residue, r)
		}
	}
	c.Summary = maps.Clone(g.Summary)
	c.Summary["residue"] = len(c.Residue)
	var v any
	if err := json.Unmarshal(c.JSON(), &v); err != nil {
		t.Fatal(err)
	}
	var drop func(any)
	drop = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["step"] == "kill" {
				v["did"] = killedOnce(v["did"])
			}
			for k, e := range v {
				if timingKeys[k] {
					delete(v, k)
					continue
				}
				drop(e)
			}
		case []any:
			for _, e := range v {
				drop(e)
			}
		}
	}
	drop(v)
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	set := map[string]bool{}
	for _, p := range pids {
		set[strconv.Itoa(p)] = true
	}
	s = regexp.MustCompile(`\b\d+\b`).ReplaceAllStringFunc(s, func(n string) string {
		if set[n] {
			return "PID"
		}
		return n
	})
	// The pid field of a delete record is the init pid too.
	return regexp.MustCompile(`"pid": \d+`).ReplaceAllString(s, `"pid": PID`)
}

// TestGCParallel sweeps 200 orphans (a quarter with live container
// processes, half of those proven by runc-style state, half by cgroup
// membership) one by one, lays out the same 200 again in the same places,
// and sweeps them with 8 deletes at a time: both sweeps leave nothing, and
// their reports agree on everything but timings and pids.
func TestGCParallel(t *testing.T) {
	testutil.NeedRoot(t)
	const n, liveEvery = 200, 4
	state, runcRoot, dead := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	nss := []string{testutil.RandID("gcp-a"), testutil.RandID("gcp-b")}
	reports := map[int]string{}
	for _, parallel := range []int{1, 8} {
		t.Run(fmt.Sprintf("parallel %d", parallel), func(t *testing.T) {
			o := makeOrphans(t, state, runcRoot, dead, nss, n, liveEvery)
			var calls, lastDone, lastTotal int
			g := GC(context.Background(), GCOptions{
				StateDir: state, RuncRoot: runcRoot, OlderThan: time.Hour, Parallel: parallel,
				Progress: func(p GCProgress) { calls++; lastDone, lastTotal = p.Deleted+p.Failed+p.Left, p.Total },
			})
			t.Logf("parallel %d: %d tasks in %.3fs; summary %v", parallel, len(g.Tasks), g.DurationSeconds, g.Summary)
			if g.Failed() || g.Summary[string(GCDeleted)] != n || len(g.Tasks) != n {
				t.Errorf("summary %v, failed %v, want %d deleted", g.Summary, g.Failed(), n)
				for _, tk := range g.Tasks {
					if tk.Action != GCDeleted {
						t.Logf("%s/%s: %s %s: %s", tk.Namespace, tk.ID, tk.Status, tk.Action, tk.Why)
						if tk.Delete != nil {
							t.Logf("  %+v", tk.Delete)
						}
					}
				}
			}
			for i := 1; i < len(g.Tasks); i++ {
				a, b := g.Tasks[i-1], g.Tasks[i]
				if a.Namespace > b.Namespace || (a.Namespace == b.Namespace && a.ID >= b.ID) {
					t.Errorf("tasks out of order: %s/%s before %s/%s", a.Namespace, a.ID, b.Namespace, b.ID)
				}
			}
			var mine []GCResidue
			for _, r := range g.Residue {
				if r.Namespace == nss[0] || r.Namespace == nss[1] {
					mine = append(mine, r)
				}
			}
			if len(mine) > 0 || len(g.Problems) > 0 {
				t.Errorf("residue %+v, problems %v", mine, g.Problems)
			}
			if calls != n+1 || lastDone != n || lastTotal != n {
				t.Errorf("progress: %d calls, last %d/%d; want %d calls, last %d/%d", calls, lastDone, lastTotal, n+1, n, n)
			}
			o.assertClean(t)
			reports[parallel] = normalizedReport(t, g, nss, o.pids())
		})
	}
	if a, b := reports[1], reports[8]; a == "" || a != b {
		t.Errorf("the parallel sweep's report differs from the sequential one's:\n%s", diffLines(a, b))
	}
}

// killRace matches what the kill step says of a sole container process
// that is also its proven init (by start time or cgroup membership): the
// init is signalled through its pidfd beside the cgroup's kill, and which
// of the two gets to it first is a race inside one delete, so the step
// says either or both. The cgroups' count can also say 2 for the one
// process: cgroups.Set.Kill counts it once for cgroup.kill (v2) and again
// when a v1 hierarchy still lists it in the next round.
var killRace = regexp.MustCompile(`^killed (init \d+ \((start time verified|member of the container's cgroup)\)|[12] processes in \d+ cgroups)$`)

// killedOnce replaces what killRace matches in a kill step's did list by
// one entry.
func killedOnce(did any) any {
	list, ok := did.([]any)
	if !ok {
		return did
	}
	var out []any
	seen := false
	for _, d := range list {
		if s, ok := d.(string); ok && killRace.MatchString(s) {
			if !seen {
				out = append(out, "killed the container's process")
			}
			seen = true
			continue
		}
		out = append(out, d)
	}
	return out
}

// diffLines lists the lines that differ, with their line numbers (at most 40).
func diffLines(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(la), len(lb)) && len(out) < 40; i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("%d: - %s\n%d: + %s", i+1, x, i+1, y))
		}
	}
	return strings.Join(out, "\n")
}

// TestGCStopped: when the context has ended, gc deletes nothing and the
// report says it stopped.
func TestGCStopped(t *testing.T) {
	testutil.NeedRoot(t)
	state := t.TempDir()
	dead := filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	o := makeOrphans(t, state, t.TempDir(), dead, []string{testutil.RandID("gcs")}, 5, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g := GC(ctx, GCOptions{StateDir: state, RuncRoot: t.TempDir(), OlderThan: time.Hour, Parallel: 2})
	if len(g.Problems) == 0 || !strings.Contains(strings.Join(g.Problems, "\n"), "gc stopped") {
		t.Errorf("problems %v, want gc stopped", g.Problems)
	}
	for _, d := range o.dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s: deleted after the context ended: %v", d, err)
		}
	}
}

// TestGCRecheck: an orphan is looked at again just before its delete,
// which may come long after the sweep looked at it. Between the two (in
// the first progress call, made before any delete starts) one orphan's
// shim comes back on its socket, one task directory is made anew (its
// mtime changes): those two are left, and say why. One more is removed by
// someone else meanwhile: it is still deleted (its delete finds the task
// directory gone, as a second delete does); the others are deleted.
func TestGCRecheck(t *testing.T) {
	testutil.NeedRoot(t)
	state, runcRoot, dead := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	ns := testutil.RandID("gcr")
	o := makeOrphans(t, state, runcRoot, dead, []string{ns}, 6, 0)
	revived := filepath.Join(t.TempDir(), "revived")
	if err := os.WriteFile(filepath.Join(o.dirs[1], "address"), []byte("unix://"+revived), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(o.dirs[1], old, old); err != nil {
		t.Fatal(err)
	}
	var between func()
	between = func() {
		between = func() {}
		testutil.Listen(t, revived)
		if err := os.Chtimes(o.dirs[2], old.Add(time.Minute), old.Add(time.Minute)); err != nil {
			t.Error(err)
		}
		if err := os.RemoveAll(o.dirs[3]); err != nil {
			t.Error(err)
		}
	}
	var last GCProgress
	g := GC(context.Background(), GCOptions{
		StateDir: state, RuncRoot: runcRoot, OlderThan: time.Hour, Parallel: 1,
		Progress: func(p GCProgress) { between(); last = p },
	})
	t.Logf("\n%s", g.Text())
	want := map[string]struct {
		action GCAction
		why    string
	}{
		"o-00000": {GCDeleted, "shim dead"},
		"o-00001": {GCLeft, "not deleted: its shim answers now: socket " + revived + " accepted the connection"},
		"o-00002": {GCLeft, "not deleted: changed since gc looked at it (mtime"},
		"o-00003": {GCDeleted, "shim dead"},
		"o-00004": {GCDeleted, "shim dead"},
		"o-00005": {GCDeleted, "shim dead"},
	}
	for _, tk := range g.Tasks {
		w := want[tk.ID]
		if tk.Status != GCOrphan || tk.Action != w.action || !strings.Contains(tk.Why, w.why) || (tk.Delete != nil) != (w.action == GCDeleted) {
			t.Errorf("%s: %s %s: %s; want orphan, %s, why containing %q", tk.ID, tk.Status, tk.Action, tk.Why, w.action, w.why)
		}
	}
	if len(g.Tasks) != len(want) || g.Failed() {
		t.Errorf("%d tasks, failed %v", len(g.Tasks), g.Failed())
	}
	if rec := g.Tasks[3].Delete; rec == nil || len(rec.Steps) == 0 || !slices.Contains(rec.Steps[0].Did, "task directory already gone") {
		t.Errorf("o-00003's delete does not say its task directory was gone: %+v", rec)
	}
	if last != (GCProgress{Deleted: 4, Left: 2, Total: 6}) {
		t.Errorf("last progress %+v", last)
	}
	for _, i := range []int{1, 2} {
		if _, err := os.Stat(o.dirs[i]); err != nil {
			t.Errorf("%s: %v", o.dirs[i], err)
		}
	}
}

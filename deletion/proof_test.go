package deletion

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// Tests of issue 16, "proof that holds", through the whole delete path.

// proofTaskDir is testutil.TaskDir with an `address` naming a socket that
// does not exist (a dead shim's), as containerd 1.x leaves it.
func proofTaskDir(t *testing.T, id string, files map[string]string) string {
	t.Helper()
	if files == nil {
		files = map[string]string{}
	}
	files["address"] = fmt.Sprintf("unix:///run/containerd/s/%x", sha256.Sum256([]byte(id)))
	return testutil.TaskDir(t, id, files)
}

// proofCgroup is testutil.ContainerCgroup (v1Only: the cgroup v1
// hierarchies only) whose cleanup first kills what is left in it, so that
// the directories can go.
func proofCgroup(t *testing.T, rel string, v1Only bool, pids ...int) []string {
	t.Helper()
	var dirs []string
	for _, m := range testutil.CgroupMounts(t) {
		var sf unix.Statfs_t
		if err := unix.Statfs(m, &sf); err != nil {
			t.Fatal(err)
		}
		if v1Only && sf.Type == unix.CGROUP2_SUPER_MAGIC {
			continue
		}
		parts := strings.Split(strings.Trim(rel, "/"), "/")
		cur := m
		for _, p := range parts {
			parent := cur
			cur = filepath.Join(cur, p)
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatal(err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if data, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					_ = os.WriteFile(filepath.Join(cur, f), data, 0o644)
				}
			}
		}
		top := filepath.Join(m, parts[0])
		dir := cur
		t.Cleanup(func() {
			_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
			for d := dir; ; d = filepath.Dir(d) {
				data, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				for i := 0; i < 100; i++ {
					if err := unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				if d == top {
					break
				}
			}
		})
		for _, pid := range pids {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
				t.Fatalf("move %d into %s: %v", pid, dir, err)
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs
}

// writeRuncState writes runc's state.json for id under root.
func writeRuncState(t *testing.T, root, id string, pid int, start uint64, cgroupDirs []string, bundleLabel string) string {
	t.Helper()
	stateDir := filepath.Join(root, testNS, id)
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for i, d := range cgroupDirs {
		paths[strconv.Itoa(i)] = d
	}
	cfg := map[string]any{"cgroups": map[string]any{}}
	if bundleLabel != "" {
		cfg["labels"] = []string{"io.example/annotation=x", "bundle=" + bundleLabel}
	}
	writeJSONFile(t, filepath.Join(stateDir, "state.json"), map[string]any{
		"id": id, "init_process_pid": pid, "init_process_start": start,
		"created": time.Now(), "cgroup_paths": paths, "config": cfg,
	})
	return stateDir
}

// TestRuncStateMustBeThisBundles: runc's state reached through
// options.json's root names another container's init with its true start
// time and cgroups, and config.json gives nothing to compare it with
// (missing, corrupt, or a relative cgroupsPath). The state is trusted only
// when runc's bundle label names this task directory and its cgroups are
// named for this id; the other container must be left alone. A state that
// passes (label and cgroups this container's) is still obeyed.
func TestRuncStateMustBeThisBundles(t *testing.T) {
	testutil.NeedRoot(t)
	specs := map[string]func(id string) (string, bool){
		"config.json missing":  func(string) (string, bool) { return "", false },
		"config.json corrupt":  func(string) (string, bool) { return "\x00{garbage", true },
		"relative cgroupsPath": func(id string) (string, bool) { return testutil.SpecWithCgroup(t, "robust-rel/"+id), true },
	}
	for specName, spec := range specs {
		for _, forged := range []string{"label names the other bundle", "label names this bundle"} {
			t.Run(specName+"/"+forged, func(t *testing.T) {
				top := "/" + testutil.RandID("robust-prooftest")
				other := testutil.StartSleeper(t)
				otherCgs := proofCgroup(t, top+"/other", false, other.Process.Pid)
				mine := testutil.StartSleeper(t)
				id := testutil.RandID("proof")
				proofCgroup(t, top+"/"+id, false, mine.Process.Pid)

				files := map[string]string{}
				if content, ok := spec(id); ok {
					files["config.json"] = content
				}
				dir := proofTaskDir(t, id, files)
				label := filepath.Join(filepath.Dir(dir), "other")
				if forged == "label names this bundle" {
					label = dir
				}
				if forged == "label names the other bundle" {
					// The other container's bundle exists: the state is its
					// record, and must outlive this delete.
					if err := os.MkdirAll(label, 0o711); err != nil {
						t.Fatal(err)
					}
				}
				root := t.TempDir()
				stateDir := writeRuncState(t, root, id, other.Process.Pid, testutil.StartTime(t, other.Process.Pid), otherCgs, label)
				if err := os.WriteFile(filepath.Join(dir, "options.json"), []byte(`{"root":"`+root+`"}`), 0o644); err != nil {
					t.Fatal(err)
				}
				rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
				t.Logf("delete: %v\n%s", err, rep.Text())
				if !testutil.Alive(other.Process.Pid) {
					t.Errorf("the other container's init %d was signalled", other.Process.Pid)
				}
				for _, d := range otherCgs {
					if _, err := os.Stat(d); err != nil {
						t.Errorf("the other container's cgroup %s was removed: %v", d, err)
					}
				}
				if !strings.Contains(rep.Text(), "not this container's") {
					t.Errorf("the report does not say the state is not this container's")
				}
				if _, err := os.Stat(filepath.Join(stateDir, "state.json")); forged == "label names the other bundle" && err != nil {
					t.Errorf("the runc state of the other container (its bundle %s exists) was removed: %v", label, err)
				}
			})
		}
	}

	t.Run("config.json missing/state is this bundle's", func(t *testing.T) {
		top := "/" + testutil.RandID("robust-prooftest")
		mine := testutil.StartSleeper(t)
		id := testutil.RandID("proof")
		cgs := proofCgroup(t, top+"/"+id, false, mine.Process.Pid)
		dir := proofTaskDir(t, id, nil)
		root := t.TempDir()
		stateDir := writeRuncState(t, root, id, mine.Process.Pid, testutil.StartTime(t, mine.Process.Pid), cgs, dir)
		if err := os.WriteFile(filepath.Join(dir, "options.json"), []byte(`{"root":"`+root+`","binary_name":"/nonexistent/runc"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		rep := mustDelete(t, dir, id)
		if !testutil.Poll(2*time.Second, 10*time.Millisecond, func() bool { return !testutil.Alive(mine.Process.Pid) }) {
			t.Errorf("the container's init %d survived:\n%s", mine.Process.Pid, rep.Text())
		}
		testutil.AssertGone(t, append([]string{dir, stateDir}, cgs...)...)
	})
}

// TestRelativeCgroupsPathNotResolvedByCaller: config.json's relative
// cgroupsPath resolved against the delete's own cgroup (here: the root
// cgroup of each v1 hierarchy) names a bystander's cgroup; the delete must
// not use it.
func TestRelativeCgroupsPathNotResolvedByCaller(t *testing.T) {
	testutil.NeedRoot(t)
	rel := testutil.RandID("robust-proofrel") + "/ctr"
	bystander := testutil.StartSleeper(t)
	var dirs []string
	for _, d := range proofCgroup(t, "/"+rel, true) {
		// Only where this process is in the root cgroup does "/"+rel equal
		// its resolution against this process's cgroup.
		if strings.Contains(d, "/memory/") {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(bystander.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	id := testutil.RandID("relative")
	dir := proofTaskDir(t, id, map[string]string{"config.json": testutil.SpecWithCgroup(t, rel)})
	rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
	t.Logf("delete: %v\n%s", err, rep.Text())
	if !testutil.Alive(bystander.Process.Pid) {
		t.Errorf("bystander %d in the cgroup the relative path names from the caller's was killed", bystander.Process.Pid)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("bystander's cgroup %s: %v", d, err)
		}
	}
	if !strings.Contains(rep.Text(), "relative") {
		t.Errorf("the report does not say the relative cgroupsPath was not used")
	}
}

// TestUnprovenLiveInitKeepsTaskDir: runc's state is gone and config.json
// is corrupt, so nothing proves (or disproves) that the live process named
// by init.pid is the container's init. It is not signalled, and the delete
// is incomplete (a failed step, no ErrUnsafe: exit 0 for containerd) and
// keeps the task directory, the only record of the running container. A
// process that started after init.pid was written cannot be its init: that
// task is deleted.
func TestUnprovenLiveInitKeepsTaskDir(t *testing.T) {
	testutil.NeedRoot(t)
	t.Run("live init unproven", func(t *testing.T) {
		init := testutil.StartSleeper(t)
		id := testutil.RandID("unproven")
		dir := proofTaskDir(t, id, map[string]string{"init.pid": strconv.Itoa(init.Process.Pid), "config.json": "\x00{garbage"})
		rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
		t.Logf("delete: %v\n%s", err, rep.Text())
		if err != nil {
			t.Errorf("delete = %v; want no error (incomplete, not unsafe)", err)
		}
		if !rep.Failed() {
			t.Error("the report does not fail: an unproven live init is reported deleted")
		}
		if !testutil.Alive(init.Process.Pid) {
			t.Errorf("unproven pid %d was signalled", init.Process.Pid)
		}
		if _, err := os.Stat(filepath.Join(dir, "init.pid")); err != nil {
			t.Errorf("the task directory was not kept: %v", err)
		}
		if !strings.Contains(rep.Text(), "task directory kept") {
			t.Error("the report does not say the task directory was kept")
		}
	})
	t.Run("init.pid's pid reused later", func(t *testing.T) {
		id := testutil.RandID("reused")
		dir := proofTaskDir(t, id, map[string]string{"config.json": "\x00{garbage"})
		later := testutil.StartSleeper(t)
		p := filepath.Join(dir, "init.pid")
		if err := os.WriteFile(p, []byte(strconv.Itoa(later.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		hourAgo := time.Now().Add(-time.Hour)
		if err := os.Chtimes(p, hourAgo, hourAgo); err != nil {
			t.Fatal(err)
		}
		rep := mustDelete(t, dir, id)
		if rep.Failed() {
			t.Errorf("a pid that started after init.pid was written made the delete fail")
		}
		if !testutil.Alive(later.Process.Pid) {
			t.Errorf("pid %d named by a stale init.pid was signalled", later.Process.Pid)
		}
		testutil.AssertGone(t, dir)
	})
}

// TestThreadedZombieInit: the container's init (runc's state: pid, start
// time, this bundle, cgroup v1 only) has a main thread that exited while
// another thread runs. It has not exited: the delete must kill it and
// finish clean.
func TestThreadedZombieInit(t *testing.T) {
	testutil.NeedRoot(t)
	bin := testutil.BuildThreadedZombie(t, t.TempDir())
	id := testutil.RandID("threaded")
	top := "/" + testutil.RandID("robust-prooftest")
	cgs := proofCgroup(t, top+"/"+id, true)
	z := testutil.StartThreadedZombie(t, bin, func(pid int) {
		for _, d := range cgs {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	pid := z.Process.Pid
	dir := proofTaskDir(t, id, map[string]string{"config.json": testutil.SpecWithCgroup(t, top+"/"+id), "init.pid": strconv.Itoa(pid)})
	root := t.TempDir()
	stateDir := writeRuncState(t, root, id, pid, testutil.StartTime(t, pid), cgs, dir)
	if err := os.WriteFile(filepath.Join(dir, "options.json"), []byte(`{"root":"`+root+`","binary_name":"/nonexistent/runc"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := mustDelete(t, dir, id)
	if testutil.Running(pid) {
		t.Errorf("init %d (main thread exited, another running) survived:\n%s", pid, rep.Text())
	}
	testutil.AssertGone(t, append([]string{dir, stateDir}, cgs...)...)
}

package deletion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"

	"golang.org/x/sys/unix"
)

// These tests run the whole delete path on task directories built by hand,
// with real processes, real cgroups (every mounted hierarchy) and real
// mounts. They need root.

const testNS = "robust-test"

func mustDelete(t *testing.T, dir, id string) *Report {
	t.Helper()
	rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, rep.Text())
	}
	t.Logf("report:\n%s", rep.Text())
	return rep
}

func TestDeleteKillsCgroupMembersAndReleasesCgroups(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("cg")
	// An "init" with a child, like a container's sh -c 'sleep & wait'.
	init := exec.Command("sh", "-c", "sleep 1000 & sleep 1001 & wait")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	time.Sleep(50 * time.Millisecond) // let sh fork its children before moving it
	rel := "/" + testutil.RandID("robust-shimtest") + "/" + id
	dirs := testutil.ContainerCgroup(t, rel, init.Process.Pid)
	kids := childPids(t, init.Process.Pid)
	if len(kids) != 2 {
		t.Fatalf("want 2 children of init, got %v", kids)
	}
	for _, k := range kids {
		for _, d := range dirs {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(k)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	bystander := testutil.StartSleeper(t)

	dir := testutil.TaskDir(t, id, map[string]string{
		"config.json": testutil.SpecWithCgroup(t, rel),
		"init.pid":    strconv.Itoa(init.Process.Pid),
	})
	rep := mustDelete(t, dir, id)

	for _, pid := range append(kids, init.Process.Pid) {
		if testutil.Alive(pid) {
			t.Errorf("container process %d survived", pid)
		}
	}
	if !testutil.Alive(bystander.Process.Pid) {
		t.Errorf("bystander %d was killed", bystander.Process.Pid)
	}
	testutil.AssertGone(t, append(dirs, dir)...)
	if rep.Pid != init.Process.Pid {
		t.Errorf("response pid = %d, want %d", rep.Pid, init.Process.Pid)
	}
}

func childPids(t *testing.T, pid int) []int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

func TestDeleteNeverSignalsUnprovenPids(t *testing.T) {
	testutil.NeedRoot(t)
	victim := testutil.StartSleeper(t)
	pid := victim.Process.Pid

	t.Run("init.pid only", func(t *testing.T) {
		// Nothing proves or disproves it the container's init: the task
		// directory is kept and the delete is incomplete (proof_test.go).
		id := testutil.RandID("claim")
		dir := testutil.TaskDir(t, id, map[string]string{"init.pid": strconv.Itoa(pid)})
		rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
		if err != nil || !rep.Failed() {
			t.Errorf("delete = %v, failed %v; want no error and a failed step\n%s", err, rep.Failed(), rep.Text())
		}
		if !testutil.Alive(pid) {
			t.Fatalf("pid %d named only by init.pid was signalled", pid)
		}
		if !strings.Contains(rep.Text(), "not signalled") {
			t.Errorf("report does not say the claimed pid was left alone:\n%s", rep.Text())
		}
	})

	t.Run("runc state with another start time", func(t *testing.T) {
		id := testutil.RandID("reused")
		root := t.TempDir()
		stateDir := filepath.Join(root, testNS, id)
		if err := os.MkdirAll(stateDir, 0o711); err != nil {
			t.Fatal(err)
		}
		state := map[string]any{
			"id":                 id,
			"init_process_pid":   pid,
			"init_process_start": testutil.StartTime(t, pid) + 1,
			"created":            time.Now(),
			"config":             map[string]any{"rootfs": "/", "cgroups": map[string]any{}},
			"cgroup_paths":       map[string]string{},
		}
		data, _ := json.Marshal(state)
		if err := os.WriteFile(filepath.Join(stateDir, "state.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := fmt.Sprintf(`{"root":%q,"binary_name":"/nonexistent/runc"}`, root)
		dir := testutil.TaskDir(t, id, map[string]string{"init.pid": strconv.Itoa(pid), "options.json": opts})
		// runc labels its state with the bundle it was created from: the
		// state is this task's (stateIsBundles).
		state["config"] = map[string]any{"rootfs": "/", "cgroups": map[string]any{}, "labels": []string{"bundle=" + dir}}
		data, _ = json.Marshal(state)
		if err := os.WriteFile(filepath.Join(stateDir, "state.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		mustDelete(t, dir, id)
		if !testutil.Alive(pid) {
			t.Fatalf("pid %d with a different start time was signalled", pid)
		}
		testutil.AssertGone(t, dir, stateDir)
	})
}

// preciousHost makes a host directory holding user data that no delete may
// touch.
func preciousHost(t *testing.T) string {
	t.Helper()
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "precious"), []byte("user data"), 0o644); err != nil {
		t.Fatal(err)
	}
	return host
}

// assertPrecious fails the test when the user data in host is gone.
func assertPrecious(t *testing.T, host string) {
	t.Helper()
	if got, err := os.ReadFile(filepath.Join(host, "precious")); err != nil || string(got) != "user data" {
		t.Fatalf("bind source data lost: %q, %v", got, err)
	}
}

// bindIntoRootfs bind-mounts host on rootfs/data of the task directory dir
// (as a container's volume left mounted) and returns the mount point.
func bindIntoRootfs(t *testing.T, dir, host string) string {
	t.Helper()
	target := filepath.Join(dir, "rootfs", "data")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(host, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	return target
}

func TestDeleteBindMountDataSurvives(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("mnt")
	host := preciousHost(t)
	dir := testutil.TaskDir(t, id, nil)
	bindIntoRootfs(t, dir, host)

	mustDelete(t, dir, id)
	testutil.AssertGone(t, dir)
	assertPrecious(t, host)
}

// TestDeleteSharedMountTable: deletes given one reading of the mount table
// (as one gc sweep's are) unmount what it lists, and a mount made under a
// task directory after the reading is never crossed: the delete leaves the
// task directory and says so, and the next delete, with a new reading,
// finishes.
func TestDeleteSharedMountTable(t *testing.T) {
	testutil.NeedRoot(t)
	host := preciousHost(t)
	bind := func(dir string) string { return bindIntoRootfs(t, dir, host) }
	precious := func() { t.Helper(); assertPrecious(t, host) }
	listed, late := testutil.RandID("listed"), testutil.RandID("late")
	listedDir, lateDir := testutil.TaskDir(t, listed, nil), testutil.TaskDir(t, late, nil)
	bind(listedDir)
	shared := &mounttable.Shared{MaxAge: time.Hour}
	if _, err := shared.Get(); err != nil {
		t.Fatal(err)
	}
	lateMount := bind(lateDir) // after the reading

	rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: listed, Bundle: listedDir, Mounts: shared})
	t.Logf("listed:\n%s", rep.Text())
	if err != nil {
		t.Fatalf("delete of a task whose mount the reading lists: %v", err)
	}
	testutil.AssertGone(t, listedDir)
	precious()

	rep, err = Delete(context.Background(), Request{Namespace: testNS, ID: late, Bundle: lateDir, Mounts: shared})
	t.Logf("late:\n%s", rep.Text())
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), lateDir) {
		t.Fatalf("delete with a mount the reading predates = %v, want ErrUnsafe naming %s", err, lateDir)
	}
	if !strings.Contains(rep.Text(), lateMount) {
		t.Errorf("the report does not name the mount left in place (%s)", lateMount)
	}
	precious()
	if _, err := os.Stat(lateDir); err != nil {
		t.Fatalf("task directory: %v, want it left in place", err)
	}

	mustDelete(t, lateDir, late) // a new reading: finishes
	testutil.AssertGone(t, lateDir)
	precious()
}

func TestDeleteEveryFileCorrupt(t *testing.T) {
	testutil.NeedRoot(t)
	garbage := "\x00\xff\x13garbage{{{"
	for _, files := range []map[string]string{
		nil,
		{"runtime": garbage, "init.pid": garbage, "options.json": garbage, "config.json": garbage, "address": garbage},
		{"runtime": "", "init.pid": "", "options.json": "", "config.json": ""},
	} {
		id := testutil.RandID("corrupt")
		// containerd's layout is the evidence that it is a task directory
		// (bundle.CheckTaskDir): every file in it may be garbage.
		dir := filepath.Join(t.TempDir(), "io.containerd.runtime.v2.task", testNS, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("/nonexistent/garbage", filepath.Join(dir, "work")); err != nil {
			t.Fatal(err)
		}
		mustDelete(t, dir, id)
		testutil.AssertGone(t, dir)
	}
}

func TestDeleteTwiceAndConcurrently(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("twice")
	dir := testutil.TaskDir(t, id, map[string]string{"runtime": "runc"})
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
			errs <- err
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent delete: %v", err)
		}
	}
	rep := mustDelete(t, dir, id)
	testutil.AssertGone(t, dir)
	if rep.Failed() {
		t.Fatalf("third delete failed:\n%s", rep.Text())
	}
}

func TestDeleteRejectsBadRequests(t *testing.T) {
	testutil.NeedRoot(t)
	parent := t.TempDir()
	keep := filepath.Join(parent, "keep")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, ns, id, bundle string }{
		{"dotdot id", testNS, "../keep", filepath.Join(parent, "..", "keep")},
		{"slash id", testNS, "a/b", filepath.Join(parent, "a", "b")},
		{"empty id", testNS, "", parent},
		{"long id", testNS, strings.Repeat("a", 77), filepath.Join(parent, strings.Repeat("a", 77))},
		{"bad namespace", "../ns", "keep", parent + "/keep"},
		{"bundle not named id", testNS, "other", parent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Delete(context.Background(), Request{Namespace: tc.ns, ID: tc.id, Bundle: tc.bundle}); err == nil {
				t.Fatal("want an error")
			}
			if _, err := os.Stat(keep); err != nil {
				t.Fatalf("a rejected request touched %s: %v", keep, err)
			}
		})
	}
}

func TestRequestTaskDir(t *testing.T) {
	state := t.TempDir()
	taskCwd := filepath.Join(t.TempDir(), "web")
	if err := os.Mkdir(taskCwd, 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	for _, tc := range []struct {
		name, cwd string
		req       Request
		want      string
		wantErr   bool
	}{
		{"bundle wins", other, Request{Namespace: "ns", ID: "web", Bundle: "/x/ns/web", StateDir: state}, "/x/ns/web", false},
		{"containerd: cwd is the task directory", taskCwd, Request{Namespace: "ns", ID: "web", StateDir: state, ByContainerd: true}, taskCwd, false},
		{"by hand: a cwd named like the task is not the task directory", taskCwd, Request{Namespace: "ns", ID: "web", StateDir: state}, filepath.Join(state, "ns", "web"), false},
		{"elsewhere: state dir", other, Request{Namespace: "ns", ID: "web", StateDir: state}, filepath.Join(state, "ns", "web"), false},
		{"elsewhere, no state dir: error", other, Request{Namespace: "ns", ID: "web"}, "", true},
		{"containerd, elsewhere, no state dir: error", other, Request{Namespace: "ns", ID: "web", ByContainerd: true}, "", true},
		{"bad id", other, Request{Namespace: "ns", ID: "../web", StateDir: state}, "", true},
		{"bad namespace", other, Request{Namespace: "a/b", ID: "web", StateDir: state}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(tc.cwd)
			got, err := tc.req.TaskDir()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("TaskDir() = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// These tests run the whole delete path on task directories built by hand,
// with real processes, real cgroups (every mounted hierarchy) and real
// mounts. They need root.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("FATAL: the delete path tests need root (real cgroups, mounts, processes); run them as root")
	}
}

const testNS = "robust-test"

// taskDir makes <tmp>/<id> with the given files and returns its path.
func taskDir(t *testing.T, id string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startSleeper starts `sleep` (not in any test cgroup) and returns its pid;
// Cleanup kills and reaps it.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	return rest[0] != 'Z' && rest[0] != 'X'
}

func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cgroupMounts returns the mount points of every cgroup hierarchy.
func cgroupMounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, " - ", 2)
		if len(parts) != 2 {
			continue
		}
		fs := strings.Fields(parts[1])
		pre := strings.Fields(parts[0])
		if (fs[0] == "cgroup" || fs[0] == "cgroup2") && pre[3] == "/" {
			out = append(out, pre[4])
		}
	}
	if len(out) == 0 {
		t.Fatal("no cgroup hierarchy mounted")
	}
	return out
}

// containerCgroup creates cgroup path rel in every hierarchy, moves the
// given pids into it, and returns the directories. Cleanup removes what is
// left.
func containerCgroup(t *testing.T, rel string, pids ...int) []string {
	t.Helper()
	var dirs []string
	for _, m := range cgroupMounts(t) {
		dir := filepath.Join(m, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
		// v1 cpuset needs cpus and mems before it takes tasks.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if parent, err := os.ReadFile(filepath.Join(m, f)); err == nil {
				_ = os.WriteFile(filepath.Join(filepath.Dir(dir), f), parent, 0o644)
				_ = os.WriteFile(filepath.Join(dir, f), parent, 0o644)
			}
		}
		for _, pid := range pids {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
				t.Fatalf("move %d into %s: %v", pid, dir, err)
			}
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			_ = unix.Rmdir(d)
			_ = unix.Rmdir(filepath.Dir(d))
		}
	})
	return dirs
}

func specWithCgroup(t *testing.T, path string) string {
	t.Helper()
	data, err := json.Marshal(&specs.Spec{Version: specs.Version, Linux: &specs.Linux{CgroupsPath: path}})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func randID(prefix string) string { return fmt.Sprintf("%s-%d", prefix, rand.Int63()) }

func mustDelete(t *testing.T, dir, id string) *Report {
	t.Helper()
	rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir})
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, rep.Text())
	}
	t.Logf("report:\n%s", rep.Text())
	return rep
}

func assertGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists (err=%v)", p, err)
		}
	}
}

func TestDeleteKillsCgroupMembersAndReleasesCgroups(t *testing.T) {
	needRoot(t)
	id := randID("cg")
	// An "init" with a child, like a container's sh -c 'sleep & wait'.
	init := exec.Command("sh", "-c", "sleep 1000 & sleep 1001 & wait")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	time.Sleep(50 * time.Millisecond) // let sh fork its children before moving it
	rel := "/" + randID("robust-shimtest") + "/" + id
	dirs := containerCgroup(t, rel, init.Process.Pid)
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
	bystander := startSleeper(t)

	dir := taskDir(t, id, map[string]string{
		"config.json": specWithCgroup(t, rel),
		"init.pid":    strconv.Itoa(init.Process.Pid),
	})
	rep := mustDelete(t, dir, id)

	for _, pid := range append(kids, init.Process.Pid) {
		if alive(pid) {
			t.Errorf("container process %d survived", pid)
		}
	}
	if !alive(bystander.Process.Pid) {
		t.Errorf("bystander %d was killed", bystander.Process.Pid)
	}
	assertGone(t, append(dirs, dir)...)
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
	needRoot(t)
	victim := startSleeper(t)
	pid := victim.Process.Pid

	t.Run("init.pid only", func(t *testing.T) {
		id := randID("claim")
		dir := taskDir(t, id, map[string]string{"init.pid": strconv.Itoa(pid)})
		rep := mustDelete(t, dir, id)
		if !alive(pid) {
			t.Fatalf("pid %d named only by init.pid was signalled", pid)
		}
		assertGone(t, dir)
		if !strings.Contains(rep.Text(), "not signalled") {
			t.Errorf("report does not say the claimed pid was left alone:\n%s", rep.Text())
		}
	})

	t.Run("runc state with another start time", func(t *testing.T) {
		id := randID("reused")
		root := t.TempDir()
		stateDir := filepath.Join(root, testNS, id)
		if err := os.MkdirAll(stateDir, 0o711); err != nil {
			t.Fatal(err)
		}
		state := map[string]any{
			"id":                 id,
			"init_process_pid":   pid,
			"init_process_start": startTime(t, pid) + 1,
			"created":            time.Now(),
			"config":             map[string]any{"rootfs": "/", "cgroups": map[string]any{}},
			"cgroup_paths":       map[string]string{},
		}
		data, _ := json.Marshal(state)
		if err := os.WriteFile(filepath.Join(stateDir, "state.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := fmt.Sprintf(`{"root":%q,"binary_name":"/nonexistent/runc"}`, root)
		dir := taskDir(t, id, map[string]string{"init.pid": strconv.Itoa(pid), "options.json": opts})
		mustDelete(t, dir, id)
		if !alive(pid) {
			t.Fatalf("pid %d with a different start time was signalled", pid)
		}
		assertGone(t, dir, stateDir)
	})
}

func TestDeleteBindMountDataSurvives(t *testing.T) {
	needRoot(t)
	id := randID("mnt")
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "precious"), []byte("user data"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := taskDir(t, id, nil)
	target := filepath.Join(dir, "rootfs", "data")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(host, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })

	mustDelete(t, dir, id)
	assertGone(t, dir)
	got, err := os.ReadFile(filepath.Join(host, "precious"))
	if err != nil || string(got) != "user data" {
		t.Fatalf("bind source data lost: %q, %v", got, err)
	}
}

func TestDeleteEveryFileCorrupt(t *testing.T) {
	needRoot(t)
	garbage := "\x00\xff\x13garbage{{{"
	for _, files := range []map[string]string{
		nil,
		{"runtime": garbage, "init.pid": garbage, "options.json": garbage, "config.json": garbage, "address": garbage},
		{"runtime": "", "init.pid": "", "options.json": "", "config.json": ""},
	} {
		id := randID("corrupt")
		dir := taskDir(t, id, files)
		if err := os.Symlink("/nonexistent/garbage", filepath.Join(dir, "work")); err != nil {
			t.Fatal(err)
		}
		mustDelete(t, dir, id)
		assertGone(t, dir)
	}
}

func TestDeleteTwiceAndConcurrently(t *testing.T) {
	needRoot(t)
	id := randID("twice")
	dir := taskDir(t, id, map[string]string{"runtime": "runc"})
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
	assertGone(t, dir)
	if rep.Failed() {
		t.Fatalf("third delete failed:\n%s", rep.Text())
	}
}

func TestDeleteRejectsBadRequests(t *testing.T) {
	needRoot(t)
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

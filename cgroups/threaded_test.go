package cgroups

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/procstat"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// threadedCgroup makes <cgroup2 mount>/<unique>/threaded, a threaded
// cgroup (cgroup.type "threaded") whose parent becomes the root of a
// threaded subtree ("domain threaded"), and returns the parent and the
// child. Cleanup kills what is left in them and removes them. It fails
// the test, saying why, when the host has no cgroup2 mount or the kernel
// refuses a threaded cgroup there: a threaded cgroup exists on every
// kernel since 4.14, and a cgroup2 mount whose root enables a controller
// that is not threaded (the hybrid layout's unified mount enables none, or
// only ones such as hugetlb that a threaded child's parent does not pass
// on) does not stop it.
func threadedCgroup(t *testing.T) (parent, child string) {
	t.Helper()
	var mp string
	for _, m := range cgroupMounts(t) {
		if m.v2 {
			mp = m.mountpoint
			break
		}
	}
	if mp == "" {
		t.Fatal("no cgroup2 hierarchy is mounted: a threaded cgroup (cgroup v2 only) cannot be made here, and this test proves the threaded case on a real one")
	}
	name := uniqueName(t)
	dirs := makeCgroups(t, []string{mp}, name+"/threaded")
	parent, child = filepath.Dir(dirs[0]), dirs[0]
	if err := os.WriteFile(filepath.Join(child, "cgroup.type"), []byte("threaded"), 0); err != nil {
		t.Fatalf("the kernel refuses to make %s threaded (write cgroup.type): %v; the threaded cgroup case cannot be proven on this host", child, err)
	}
	for dir, want := range map[string]string{parent: "domain threaded", child: "threaded"} {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.type"))
		if err != nil || string(data) != want+"\n" {
			t.Fatalf("cgroup.type of %s = %q, %v; want %q", dir, data, err, want)
		}
	}
	return parent, child
}

// startTwoThreads starts the threaded-zombie helper with its main thread
// held (waiting on stdin, which is never written) and returns its pid and
// the id of its second thread. Cleanup kills and reaps it.
func startTwoThreads(t *testing.T, bin string) (pid, tid int) {
	t.Helper()
	cmd := exec.Command(bin)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); _ = in.Close() })
	pid = cmd.Process.Pid
	if !testutil.Poll(5*time.Second, time.Millisecond, func() bool {
		st, err := procstat.Read(pid)
		return err == nil && st.Threads == 2
	}) {
		t.Fatalf("pid %d did not start its second thread", pid)
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if id, err := strconv.Atoi(e.Name()); err == nil && id != pid {
			return pid, id
		}
	}
	t.Fatalf("pid %d: no second thread in /proc/%d/task", pid, pid)
	return 0, 0
}

// TestThreadedCgroup: cgroup2 refuses to list a threaded cgroup's
// processes (cgroup.procs: EOPNOTSUPP) and to kill it (cgroup.kill:
// EOPNOTSUPP). Its processes are still found, through cgroup.threads and
// each thread's process (as runc's readProcsFile does), and killed: a
// threaded cgroup's processes never read as "none".
func TestThreadedCgroup(t *testing.T) {
	requireRoot(t)
	bin := testutil.BuildThreadedZombie(t, t.TempDir())

	t.Run("a thread alone in the threaded cgroup names its process", func(t *testing.T) {
		parent, child := threadedCgroup(t)
		pid, tid := startTwoThreads(t, bin)
		moveInto(t, pid, []string{parent})
		if err := os.WriteFile(filepath.Join(child, "cgroup.threads"), []byte(strconv.Itoa(tid)), 0); err != nil {
			t.Fatalf("move thread %d of pid %d into %s: %v", tid, pid, child, err)
		}
		if _, err := os.ReadFile(filepath.Join(child, "cgroup.procs")); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Fatalf("read cgroup.procs of threaded %s: %v; want EOPNOTSUPP (the case under test)", child, err)
		}
		if got, err := readPids(child); err != nil || !slices.Equal(got, []int{pid}) {
			t.Errorf("readPids(%s) = %v, %v; want [%d] (thread %d's process)", child, got, err, pid, tid)
		}
		if got, err := readPids(parent); err != nil || !slices.Equal(got, []int{pid}) {
			t.Errorf("readPids(%s) = %v, %v; want [%d]", parent, got, err, pid)
		}
		set := &Set{Dirs: []string{child}}
		if procs, errs := set.Procs(); len(errs) > 0 || !slices.Equal(procs, []int{pid}) {
			t.Errorf("Procs of {%s} = %v, %v; want [%d]", child, procs, errs, pid)
		}
	})

	t.Run("Kill empties a threaded cgroup", func(t *testing.T) {
		parent, child := threadedCgroup(t)
		_, p := startSleep(t)
		moveInto(t, p.pid, []string{parent})
		moveInto(t, p.pid, []string{child})
		if got := procsOf(child); len(got) != 0 {
			t.Fatalf("cgroup.procs of threaded %s lists %v; want it unreadable (EOPNOTSUPP)", child, got)
		}
		set := &Set{Dirs: []string{child}}
		if procs, errs := set.Procs(); len(errs) > 0 || !slices.Equal(procs, []int{p.pid}) {
			t.Errorf("Procs of {%s} = %v, %v; want [%d]", child, procs, errs, p.pid)
		}
		if !set.Contains(p.pid) {
			t.Errorf("Contains(%d) = false for a process in %s", p.pid, child)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		n, err := set.Kill(ctx)
		if err != nil {
			t.Fatalf("Kill: %v", err)
		}
		if n != 1 {
			t.Errorf("Kill signalled %d, want 1", n)
		}
		assertGone(t, p)
		if _, err := set.Remove(ctx); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		assertNoDirs(t, child)
	})
}

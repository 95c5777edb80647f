package cgroups

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// requireRoot fails (never skips) a test that needs root: CI runs as root,
// and a skipped kernel test must not count as a pass.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("THIS TEST NEEDS ROOT: it creates real cgroups, mounts cgroup2 and kills real processes; run `go test ./cgroups/` as root")
	}
}

// testMount is a cgroup hierarchy as the tests see it, independently of the
// package's own mountinfo handling.
type testMount struct {
	mountpoint string
	v2         bool
	subsys     string // runc's state key: "" (unified), "cpu", "name=systemd", ...
}

// cgroupMounts lists the cgroup mounts whose root is the hierarchy root,
// one per hierarchy (first mount of each device).
func cgroupMounts(t *testing.T) []testMount {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	var (
		out  []testMount
		seen = map[[2]int]bool{}
	)
	for _, in := range infos {
		dev := [2]int{in.Major, in.Minor}
		if in.Root != "/" || seen[dev] {
			continue
		}
		seen[dev] = true
		m := testMount{mountpoint: in.Mountpoint, v2: in.FSType == "cgroup2"}
		if !m.v2 {
			for _, o := range strings.Split(in.VFSOptions, ",") {
				if o == "rw" || o == "ro" || o == "xattr" || o == "noprefix" || o == "clone_children" || strings.HasPrefix(o, "release_agent=") {
					continue
				}
				m.subsys = o // runc keys by one subsystem name
				break
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatal("no cgroup hierarchy is mounted")
	}
	return out
}

func v1Only(ms []testMount) []testMount {
	var out []testMount
	for _, m := range ms {
		if !m.v2 {
			out = append(out, m)
		}
	}
	return out
}

func uniqueName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "robust-test-" + hex.EncodeToString(b)
}

// makeCgroups creates rel (e.g. "robust-test-x/child") below every mount
// and returns the directories. Cleanup kills what is left in them and
// removes them, independently of the package under test.
func makeCgroups(t *testing.T, mounts []string, rel string) []string {
	t.Helper()
	var dirs []string
	for _, mp := range mounts {
		cur := mp
		top := filepath.Join(mp, strings.Split(rel, "/")[0])
		t.Cleanup(func() { cleanupCgroup(t, top) })
		for _, part := range strings.Split(rel, "/") {
			parent := cur
			cur = filepath.Join(cur, part)
			if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatalf("create cgroup %s: %v", cur, err)
			}
			// v1 cpuset: a new cgroup has no cpus or mems to run on.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if data, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					if err := os.WriteFile(filepath.Join(cur, f), data, 0); err != nil {
						t.Fatalf("set %s of %s: %v", f, cur, err)
					}
				}
			}
		}
		dirs = append(dirs, cur)
	}
	return dirs
}

// cleanupCgroup thaws, kills everything in, and removes a test cgroup tree.
func cleanupCgroup(t *testing.T, top string) {
	if _, err := os.Lstat(top); err != nil {
		return
	}
	var order []string
	_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			order = append(order, p)
		}
		return nil
	})
	for _, d := range order {
		_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
		_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
		for _, pid := range procsOf(d) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for i := len(order) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 200; try++ {
			if err = os.Remove(order[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func procsOf(dir string) []int {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procsBelow lists the pids in dir and every descendant cgroup.
func procsBelow(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			pids = append(pids, procsOf(p)...)
		}
		return nil
	})
	return pids
}

// moveInto puts pid into every dir.
func moveInto(t *testing.T, pid int, dirs []string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatalf("move pid %d into %s: %v", pid, d, err)
		}
	}
}

// proc is a started test process with its identity.
type testProc struct {
	pid   int
	start uint64
}

func identify(t *testing.T, pid int) testProc {
	t.Helper()
	st, err := readStat(pid)
	if err != nil {
		t.Fatalf("identify pid %d: %v", pid, err)
	}
	return testProc{pid: pid, start: st.Start}
}

// startSleep starts `sleep 1000` (or the given binary); cleanup kills and
// reaps it.
func startSleep(t *testing.T, bin ...string) (*exec.Cmd, testProc) {
	t.Helper()
	name := "sleep"
	if len(bin) > 0 {
		name = bin[0]
	}
	cmd := exec.Command(name, "1000")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, identify(t, cmd.Process.Pid)
}

// startFamily starts sh with two sleep children, after moving sh into dirs
// (sh waits on stdin before forking). It returns sh and its children.
func startFamily(t *testing.T, dirs []string) []testProc {
	t.Helper()
	cmd := exec.Command("sh", "-c", "read x; sleep 1000 & sleep 1000")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sh: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sh := identify(t, cmd.Process.Pid)
	before := procsOf(dirs[0])
	moveInto(t, sh.pid, dirs)
	if _, err := io.WriteString(in, "go\n"); err != nil {
		t.Fatal(err)
	}
	_ = in.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pids []int
		for _, pid := range procsOf(dirs[0]) {
			if !slices.Contains(before, pid) {
				pids = append(pids, pid)
			}
		}
		if len(pids) >= 3 {
			sort.Ints(pids)
			var out []testProc
			for _, pid := range pids {
				out = append(out, identify(t, pid))
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("sh children did not show up in %s: %v", dirs[0], pids)
		}
		time.Sleep(time.Millisecond)
	}
}

// isGone reports whether the process is gone: no such pid, another process
// under the pid, or a zombie (nobody reaps orphans here) with no live
// thread (a main thread that exited while others run shows "Z" too).
func isGone(p testProc) bool {
	st, err := readStat(p.pid)
	if err != nil {
		return errors.Is(err, errGone)
	}
	return st.Start != p.start || (st.Zombie() && procDying(p.pid))
}

func assertGone(t *testing.T, ps ...testProc) {
	t.Helper()
	for _, p := range ps {
		if !isGone(p) {
			t.Errorf("pid %d is still alive", p.pid)
		}
	}
}

func assertAlive(t *testing.T, ps ...testProc) {
	t.Helper()
	for _, p := range ps {
		if isGone(p) {
			t.Errorf("pid %d was killed but is not in the set", p.pid)
		}
		if err := unix.Kill(p.pid, 0); err != nil {
			t.Errorf("kill(%d, 0): %v", p.pid, err)
		}
	}
}

func assertNoDirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s still exists (lstat: %v)", d, err)
		}
	}
}

func assertEmpty(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if pids := procsBelow(d); len(pids) > 0 {
			t.Errorf("cgroup %s still has processes %v", d, pids)
		}
	}
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func mountpoints(ms []testMount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.mountpoint)
	}
	return out
}

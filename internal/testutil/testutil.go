// Package testutil holds what the unit tests of the product packages
// share: task directories built by hand, real processes, real cgroups in
// every mounted hierarchy, and sockets. Imported by tests only.
package testutil

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net"
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

// NeedRoot fails the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("FATAL: the delete path tests need root (real cgroups, mounts, processes); run them as root")
	}
}

// TaskDir makes <tmp>/<id> with the given files and returns its path.
func TaskDir(t *testing.T, id string, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	if err := os.Mkdir(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The evidence of a task directory outside containerd's layout
	// (bundle.CheckTaskDir): the shim's address, as containerd 1.6/1.7's
	// runc shim writes it, unless the test writes its own.
	if _, ok := files["address"]; !ok {
		if _, ok := files["bootstrap.json"]; !ok {
			addr := fmt.Sprintf("unix:///run/containerd/s/%x", sha256.Sum256([]byte(dir)))
			if err := os.WriteFile(filepath.Join(dir, "address"), []byte(addr), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// StartSleeper starts `sleep` (not in any test cgroup) and returns its pid;
// Cleanup kills and reaps it.
func StartSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// Alive reports whether pid runs (a zombie counts as gone).
func Alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	return rest[0] != 'Z' && rest[0] != 'X'
}

// StartTime is pid's start time (clock ticks since boot). It parses
// /proc/<pid>/stat itself, not through internal/procstat: it is the
// independent reading procstat's tests compare with.
func StartTime(t testing.TB, pid int) uint64 {
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

// CgroupMounts returns the mount points of every cgroup hierarchy.
func CgroupMounts(t testing.TB) []string {
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

// ContainerCgroup creates cgroup path rel in every hierarchy, moves the
// given pids into it, and returns the directories. Cleanup removes what is
// left.
func ContainerCgroup(t testing.TB, rel string, pids ...int) []string {
	t.Helper()
	var dirs []string
	for _, m := range CgroupMounts(t) {
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

// SpecWithCgroup is a config.json with linux.cgroupsPath set.
func SpecWithCgroup(t *testing.T, path string) string {
	t.Helper()
	data, err := json.Marshal(&specs.Spec{Version: specs.Version, Linux: &specs.Linux{CgroupsPath: path}})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// RandID is prefix and a random number.
func RandID(prefix string) string { return fmt.Sprintf("%s-%d", prefix, rand.Int63()) }

// AssertGone fails the test for each path that still exists.
func AssertGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists (err=%v)", p, err)
		}
	}
}

// Listen serves a unix socket at path until the test ends.
func Listen(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

// DeadSocket leaves a unix socket file at path that nobody listens on.
func DeadSocket(t testing.TB, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// Poll calls cond every interval until it returns true or timeout passes;
// it returns cond's last answer.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

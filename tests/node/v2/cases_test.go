package v2

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// forkingArgs: an init that forks a long-lived child every 50 ms (up to
// 5000), so that it is still forking when its shim dies and the delete runs.
var forkingArgs = []string{"sh", "-c", `busybox mkfifo /tmp/f; exec 3<>/tmp/f; n=0; while [ $n -lt 5000 ]; do sleep 100000 & n=$((n+1)); read -t 0.05 x <&3; done; wait`}

// TestV2: for each case and shim, a container is started, its shim is
// SIGKILLed, and containerd runs the delete; then the next container of
// the same name is started.
func TestV2(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		nested bool // the container's cgroup gets child cgroups of its own
	}{
		{name: "plain"},
		{name: "nested-cgroups", nested: true},
		{name: "forking", args: forkingArgs},
	}
	for _, tc := range cases {
		for _, s := range shims {
			t.Run(tc.name+"/"+s.name, func(t *testing.T) {
				runCase(t, s, tc.name, tc.args, tc.nested)
			})
		}
	}
}

func runCase(t *testing.T, s shimUnderTest, name string, args []string, nested bool) {
	ctx := context.Background()
	id := name + "-" + s.name
	cfg := harness.ContainerConfig{Namespace: namespace, ID: id, Runtime: s.runtime, Busybox: env.Busybox, Args: args}
	c, err := shared.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(t, c) })
	cg, err := v2Cgroup(c.Init.Pid)
	if err != nil {
		t.Fatal(err)
	}

	// The production layout: memory and pids on the container's cgroup.
	ctrl, _ := os.ReadFile(filepath.Join(cg, "cgroup.controllers"))
	note(t, s, name, hasWords(string(ctrl), "memory", "pids"), "container cgroup %s offers %q", strings.TrimPrefix(cg, "/sys/fs/cgroup"), strings.TrimSpace(string(ctrl)))
	scope := harness.SystemdScope(namespace, id)
	systemd := harness.CgroupDriver() == "systemd"
	if systemd {
		load, active := unitState(scope)
		note(t, s, name, filepath.Base(cg) == scope && active == "active", "in scope %s (%s/%s)", scope, load, active)
	}
	if nested {
		for _, d := range []string{"nested/deeper", "empty"} {
			if err := os.MkdirAll(filepath.Join(cg, d), 0o755); err != nil {
				t.Fatalf("child cgroup of the container: %v", err)
			}
		}
		if err := os.WriteFile(filepath.Join(cg, "nested/deeper/cgroup.procs"), []byte(strconv.Itoa(c.Exec.Pid)), 0o644); err != nil {
			t.Fatalf("move the exec'd process into a child cgroup: %v", err)
		}
	}
	if args != nil {
		// Still forking: more members than the record saw.
		if !harness.Poll(30*time.Second, 100*time.Millisecond, func() bool { return members(cg) >= len(c.Procs)+5 }) {
			t.Fatalf("the forking container did not fork (members %d)", members(cg))
		}
	}
	before := descendants(cg)
	n := members(cg)
	watch, err := watchWrites(filepath.Join(cg, "cgroup.kill"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(watch)

	_, logOff := shared.LogSince(0)
	defer func() {
		if t.Failed() {
			log, _ := shared.LogSince(logOff)
			t.Logf("containerd log since the shim was killed (the delete's report):\n%s", log)
		}
	}()
	start := time.Now()
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	var r harness.Residue
	if s.asserted {
		r = c.WaitClean(ctx, 90*time.Second, true)
	} else {
		r = c.WaitSettled(ctx, 60*time.Second, 3*time.Second, true)
	}
	took := time.Since(start)
	note(t, s, name, len(r) == 0, "after the shim's SIGKILL (%d members, %d cgroups): residue %s (%s)", n, len(before), summary(r), took.Round(100*time.Millisecond))
	var left []string
	for _, d := range before {
		if _, err := os.Stat(d); err == nil {
			left = append(left, strings.TrimPrefix(d, "/sys/fs/cgroup"))
		}
	}
	note(t, s, name, len(left) == 0, "cgroup and descendants left: %v", left)
	note(t, s, name, written(watch), "cgroup.kill written during the delete")
	if systemd {
		load, active := unitState(scope)
		note(t, s, name, load == "not-found", "scope after the delete: %s/%s", load, active)
	}

	// The next container of the same name (the first one's test-side
	// files, its rootfs source, removed first).
	cleanup(t, c)
	c2, err := shared.Run(ctx, harness.ContainerConfig{Namespace: namespace, ID: id, Runtime: s.runtime, Busybox: env.Busybox})
	note(t, s, name, err == nil, "next container of the same name starts (%v)", err)
	if err != nil {
		return
	}
	t.Cleanup(func() { cleanup(t, c2) })
	cg2, err := v2Cgroup(c2.Init.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if systemd {
		load, active := unitState(scope)
		note(t, s, name, filepath.Base(cg2) == scope && active == "active", "next container in its own scope %s (%s/%s)", strings.TrimPrefix(cg2, "/sys/fs/cgroup"), load, active)
	} else {
		note(t, s, name, cg2 == cg, "next container in %s", strings.TrimPrefix(cg2, "/sys/fs/cgroup"))
	}
}

func summary(r harness.Residue) string {
	if len(r) == 0 {
		return "none"
	}
	return r.Summary()
}

// cleanup removes whatever a case left, so later cases start clean.
func cleanup(t *testing.T, c *harness.Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Cleanup(ctx); err != nil {
		t.Logf("cleanup %s: %v", c.Cfg.ID, err)
	}
}

// v2Cgroup is pid's cgroup in the unified hierarchy.
func v2Cgroup(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return filepath.Join("/sys/fs/cgroup", p), nil
		}
	}
	return "", fmt.Errorf("pid %d: no cgroup v2 line in /proc/%d/cgroup", pid, pid)
}

// descendants is dir and every cgroup below it.
func descendants(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// members counts the processes in dir and below.
func members(dir string) int {
	n := 0
	for _, d := range descendants(dir) {
		n += len(harness.CgroupPids(d))
	}
	return n
}

// unitState is systemd's LoadState and ActiveState of unit.
func unitState(unit string) (load, active string) {
	out, err := exec.Command("systemctl", "show", "-p", "LoadState", "-p", "ActiveState", unit).Output()
	if err != nil {
		return "error: " + err.Error(), ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "LoadState="); ok {
			load = v
		}
		if v, ok := strings.CutPrefix(l, "ActiveState="); ok {
			active = v
		}
	}
	return load, active
}

// watchWrites watches file for writes (IN_MODIFY, which the kernel sends
// for every successful write(2), on cgroupfs too).
func watchWrites(file string) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return -1, err
	}
	if _, err := unix.InotifyAddWatch(fd, file, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("watch %s: %w", file, err)
	}
	return fd, nil
}

// written reports whether the watch saw a write.
func written(fd int) bool {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			return false
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Mask&unix.IN_MODIFY != 0 {
				return true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
	}
}

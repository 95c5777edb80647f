package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Issue 16, "proof that holds", end to end: our shim only, against a real
// containerd, runc and kernel. None of these cases is in the side-by-side
// table.

// oursUnderTest is our shim, or a failed test when it is not under test.
func oursUnderTest(t *testing.T) shimUnderTest {
	t.Helper()
	s, ok := shimByName("ours")
	if !ok {
		t.Fatal("ours is not under test")
	}
	return s
}

// unifiedRoot is where the host's cgroup2 hierarchy is mounted
// (/sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup in the node).
var unifiedRoot = harness.UnifiedRoot()

// cgroupV1Only takes the container's processes out of its cgroup2 cgroup
// (into the unified root), as on a cgroup v1 host or one without
// cgroup.kill (before Linux 5.14): on this hybrid host cgroup.kill of the
// unified hierarchy would otherwise kill every process without any proof
// or pidfd being needed.
func cgroupV1Only(t *testing.T, c *harness.Container) {
	t.Helper()
	var unified string
	for _, d := range c.Cgroups {
		if strings.HasPrefix(d, unifiedRoot+"/") {
			unified = d
		}
	}
	if unified == "" {
		t.Fatalf("container %s has no cgroup in %s: %v", c.Cfg.ID, unifiedRoot, c.Cgroups)
	}
	// A main thread that exited stays listed (and stays behind: only live
	// threads move) while other threads run; "populated" counts live ones.
	if !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool {
		for _, pid := range harness.CgroupPids(unified) {
			_ = os.WriteFile(filepath.Join(unifiedRoot, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		}
		ev, err := os.ReadFile(filepath.Join(unified, "cgroup.events"))
		return err == nil && strings.Contains(string(ev), "populated 0")
	}) {
		t.Fatalf("could not move the processes of %s out: %v", unified, harness.CgroupPids(unified))
	}
}

// startThreadedZombieInit starts a container whose init ends by exec'ing
// the threaded-zombie helper (copied into its rootfs once it runs): the
// init's main thread exits while another thread runs, after forking the
// usual two children.
func startThreadedZombieInit(t *testing.T, s shimUnderTest, name string) *harness.Container {
	t.Helper()
	bin := testutil.BuildThreadedZombie(t, t.TempDir())
	c := startContainer(t, shared, s, caseID(name, s.name), func(cfg *harness.ContainerConfig) {
		cfg.Args = []string{"sh", "-c", "sleep 1000000 & sleep 1000001 & while [ ! -x /threaded-zombie ]; do sleep 0.05; done; exec /threaded-zombie"}
	})
	tmp := filepath.Join(c.Rootfs, ".threaded-zombie")
	if err := harness.CopyFile(bin, tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.Rootfs, "threaded-zombie")); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(10*time.Second, 10*time.Millisecond, func() bool { return testutil.ThreadedZombie(c.Init.Pid) }) {
		t.Fatalf("init %s did not become a threaded zombie", c.Init)
	}
	return c
}

// stillRuns reports whether the recorded process runs: its pid has the
// recorded start time and a thread of it has not exited (Proc.Alive counts
// a main thread that exited while others run as gone).
func stillRuns(p harness.Proc) bool {
	now, err := harness.RecordProc(p.Pid)
	return err == nil && now.Start == p.Start && testutil.Running(p.Pid)
}

// TestProofThreadedZombieInit: the container's init is a process whose
// main thread exited while another thread runs ("Z" in /proc/<pid>/stat),
// on cgroup v1 alone; the shim is SIGKILLed and containerd runs our
// delete. The init has not exited: it must be killed and everything
// cleaned up.
func TestProofThreadedZombieInit(t *testing.T) {
	s := oursUnderTest(t)
	ctx := context.Background()
	c := startThreadedZombieInit(t, s, "proof threaded zombie init")
	cgroupV1Only(t, c)
	_, logOff := shared.LogSince(0)
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	ev, seen := shared.WaitExit(namespace, c.Cfg.ID, exitTimeout)
	c.WaitTaskGone(ctx, taskTimeout)
	r := c.WaitClean(ctx, settle, true)
	checkExit(t, ev, seen)
	checkClean(t, r)
	// Polled: a pid namespace's init finishes exiting only once its
	// namespace's last zombie is reaped.
	if !harness.Poll(settle, 20*time.Millisecond, func() bool { return !stillRuns(c.Init) }) {
		t.Errorf("init %s (main thread exited, another running) still runs", c.Init)
	}
	if t.Failed() {
		log, _ := shared.LogSince(logOff)
		t.Logf("containerd log since the shim was killed:\n%s", log)
	}
}

// seccompOldKernel runs a command under a seccomp filter that fails
// pidfd_open with EINVAL when PIDFD_NONBLOCK is passed, as Linux before
// 5.10 does (x86_64). With --probe it only checks that the filter works.
const seccompOldKernel = `#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
int main(int argc, char **argv) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pidfd_open, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_NONBLOCK, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = {sizeof f / sizeof f[0], f};
	if (argc < 2) return 2;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p)) {
		perror("seccomp");
		return 2;
	}
	if (strcmp(argv[1], "--probe") == 0)
		return syscall(__NR_pidfd_open, getpid(), O_NONBLOCK) == -1 && errno == EINVAL ? 0 : 1;
	execv(argv[1], argv + 1);
	perror("execv");
	return 127;
}
`

// buildOldKernel compiles seccompOldKernel with gcc and checks it.
func buildOldKernel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "old-kernel.c"), filepath.Join(dir, "old-kernel")
	if err := os.WriteFile(src, []byte(seccompOldKernel), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build the old-kernel wrapper: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "--probe").CombinedOutput(); err != nil {
		t.Fatalf("the old-kernel wrapper does not refuse pidfd_open(PIDFD_NONBLOCK): %v\n%s", err, out)
	}
	return bin
}

// TestProofOldKernelPidfd: the delete runs on a kernel that refuses
// pidfd_open(pid, PIDFD_NONBLOCK) with EINVAL (Linux before 5.10: Ubuntu
// 20.04's 5.4, RHEL 8), emulated by seccomp, by hand as containerd runs
// it, with the container on cgroup v1 alone. Every process must be killed
// and everything cleaned up.
func TestProofOldKernelPidfd(t *testing.T) {
	s := oursUnderTest(t)
	wrapper := buildOldKernel(t)
	ctx := context.Background()
	c := startContainer(t, shared, s, caseID("proof old kernel pidfd", s.name))
	cgroupV1Only(t, c)
	shared.KeepServing(t)
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, harness.ShimCleanupTimeout)
	defer cancel()
	cmd := c.DeleteCommand(dctx)
	cmd.Args = append([]string{wrapper}, append([]string{cmd.Path}, cmd.Args[1:]...)...)
	cmd.Path = wrapper
	out, err := cmd.Output()
	stderr := ""
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		stderr = string(ee.Stderr)
	}
	if err != nil {
		t.Errorf("delete under the old kernel: %v (stdout %q)\n%s", err, out, stderr)
	}
	r := c.WaitClean(ctx, settle, false)
	checkClean(t, r)
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
}

// editJSON rewrites the task directory's JSON file name with edit
// (creating {} first when it is missing).
func editJSON(t *testing.T, c *harness.Container, name string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(c.Bundle, name)
	m := map[string]any{}
	data, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setCgroupsPath sets config.json's linux.cgroupsPath.
func setCgroupsPath(t *testing.T, c *harness.Container, p string) {
	t.Helper()
	editJSON(t, c, harness.ConfigFile, func(m map[string]any) {
		linux, _ := m["linux"].(map[string]any)
		if linux == nil {
			linux = map[string]any{}
		}
		linux["cgroupsPath"] = p
		m["linux"] = linux
	})
}

// killedByContainerd SIGKILLs c's shim and waits until containerd has run
// our delete and forgotten the task.
func killedByContainerd(t *testing.T, c *harness.Container) (logOff int64) {
	t.Helper()
	_, logOff = shared.LogSince(0)
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	shared.WaitExit(namespace, c.Cfg.ID, exitTimeout)
	if !c.WaitTaskGone(context.Background(), taskTimeout) {
		t.Errorf("containerd still knows task %s", c.Cfg.ID)
	}
	return logOff
}

// assertKept checks that the task directory of c was kept, with the
// container's init running (nothing proved it the container's).
func assertKept(t *testing.T, c *harness.Container) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(c.Bundle, harness.InitPidFile)); err != nil {
		t.Errorf("the task directory of the unproven running container was not kept: %v", err)
	}
	if !c.Init.Alive() {
		t.Errorf("init %s was signalled without proof", c.Init)
	}
}

// TestProofForgedStateThroughOptionsRoot: options.json's root leads to a
// runc state for this id that is another container's (its init with its
// true start time, its cgroups, its bundle label), and config.json gives
// nothing to compare it with. Our delete must leave the other container
// alone; this container's running init, which nothing proves, is not
// signalled and its task directory is kept.
func TestProofForgedStateThroughOptionsRoot(t *testing.T) {
	s := oursUnderTest(t)
	for i, tc := range []struct {
		name  string
		spoil func(t *testing.T, c *harness.Container)
	}{
		{"config.json missing", func(t *testing.T, c *harness.Container) {
			if err := c.RemoveFile(harness.ConfigFile); err != nil {
				t.Fatal(err)
			}
		}},
		{"config.json corrupt", func(t *testing.T, c *harness.Container) {
			if err := c.CorruptFile(harness.ConfigFile); err != nil {
				t.Fatal(err)
			}
		}},
		{"relative cgroupsPath", func(t *testing.T, c *harness.Container) {
			setCgroupsPath(t, c, "e2e-relative/"+c.Cfg.ID)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := startContainer(t, shared, s, caseID(fmt.Sprintf("proof forged %d other", i), s.name))
			c := startContainer(t, shared, s, caseID(fmt.Sprintf("proof forged %d", i), s.name))
			data, err := os.ReadFile(filepath.Join(other.RuncState, "state.json"))
			if err != nil {
				t.Fatal(err)
			}
			var st map[string]any
			if err := json.Unmarshal(data, &st); err != nil {
				t.Fatal(err)
			}
			st["id"] = c.Cfg.ID
			root := t.TempDir()
			dir := filepath.Join(root, namespace, c.Cfg.ID)
			if err := os.MkdirAll(dir, 0o711); err != nil {
				t.Fatal(err)
			}
			if data, err = json.Marshal(st); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "state.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			editJSON(t, c, harness.OptionsFile, func(m map[string]any) { m["root"] = root })
			tc.spoil(t, c)

			logOff := killedByContainerd(t, c)
			var dead []string
			for _, p := range other.Procs {
				if !p.Alive() {
					dead = append(dead, p.String())
				}
			}
			if len(dead) > 0 {
				t.Errorf("the other container's processes were killed: %v", dead)
			}
			for _, d := range other.Cgroups {
				if _, err := os.Stat(d); err != nil {
					t.Errorf("the other container's cgroup %s: %v", d, err)
				}
			}
			assertKept(t, c)
			if t.Failed() {
				log, _ := shared.LogSince(logOff)
				t.Logf("containerd log since the shim was killed:\n%s", log)
			}
		})
	}
}

// TestProofRelativeCgroupsPath: config.json's cgroupsPath is relative and
// runc's state is gone. Resolved against the cgroup of the process that
// runs the delete (containerd here; an operator's shell or the gc service
// otherwise) it names a bystander's cgroup. Our delete must not use it:
// the bystander and its cgroups stay; the container's running init, which
// nothing proves, is not signalled and its task directory is kept.
func TestProofRelativeCgroupsPath(t *testing.T) {
	s := oursUnderTest(t)
	c := startContainer(t, shared, s, caseID("proof relative cgroupsPath", s.name))
	rel := testutil.RandID("e2e-relative") + "/ctr"

	// Where runc's rules put rel for containerd's cgroup: below it (v1),
	// below its parent (cgroup2).
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", shared.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	bystander := exec.Command("sleep", "1000005")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bystander.Process.Kill(); _ = bystander.Wait() })
	bp, err := harness.RecordProc(bystander.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		mount, own := "", parts[2]
		switch key := parts[1]; {
		case key == "":
			mount, own = unifiedRoot, path.Dir(own)
		case key == "name=systemd":
			mount = "/sys/fs/cgroup/systemd"
		case !strings.Contains(key, ","):
			mount = filepath.Join("/sys/fs/cgroup", key)
		}
		if mount == "" || parts[1] == "cpuset" {
			continue // cpuset needs cpus and mems first; one hierarchy less does not matter
		}
		dir := filepath.Join(mount, own, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		top := filepath.Join(mount, own, strings.Split(rel, "/")[0])
		t.Cleanup(func() {
			_ = bystander.Process.Kill()
			_ = bystander.Wait()
			harness.Poll(2*time.Second, 10*time.Millisecond, func() bool {
				_ = os.Remove(dir)
				_ = os.Remove(top)
				_, err := os.Stat(top)
				return errors.Is(err, os.ErrNotExist)
			})
		})
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(bp.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	if len(dirs) == 0 {
		t.Fatal("no hierarchy to place the bystander in")
	}
	setCgroupsPath(t, c, rel)
	if err := c.RemoveRuncState(); err != nil {
		t.Fatal(err)
	}

	logOff := killedByContainerd(t, c)
	if !bp.Alive() {
		t.Errorf("bystander %s, in the cgroup the relative path names from containerd's, was killed", bp)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("bystander's cgroup %s: %v", d, err)
		}
	}
	assertKept(t, c)
	if t.Failed() {
		log, _ := shared.LogSince(logOff)
		t.Logf("containerd log since the shim was killed:\n%s", log)
	}
}

// TestProofUnprovenInitKept: runc's state is gone and config.json is
// corrupt: nothing proves that the live init.pid is the container's init.
// Our delete (run by containerd) must not signal it, and must keep the
// task directory, the only record of the running container, instead of
// reporting it deleted.
func TestProofUnprovenInitKept(t *testing.T) {
	s := oursUnderTest(t)
	c := startContainer(t, shared, s, caseID("proof unproven init kept", s.name))
	if err := c.RemoveRuncState(); err != nil {
		t.Fatal(err)
	}
	if err := c.CorruptFile(harness.ConfigFile); err != nil {
		t.Fatal(err)
	}
	logOff := killedByContainerd(t, c)
	assertKept(t, c)
	log, _ := shared.LogSince(logOff)
	if !strings.Contains(log, "task directory kept") {
		t.Errorf("containerd's log does not carry our report that the task directory was kept")
	}
	if t.Failed() {
		t.Logf("containerd log since the shim was killed:\n%s", log)
	}
}

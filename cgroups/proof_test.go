package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// Tests of issue 16, "proof that holds": what counts as proof and as gone,
// on the kernels and hierarchies the delete path meets.

// TestKillThreadedZombie: a process whose main thread exited while another
// thread runs shows "Z" in /proc/<pid>/stat (and, on cgroup v1, the root
// cgroups in /proc/<pid>/cgroup). It has not exited: Kill, KillMember and
// KillVerified must signal it (through its pidfd) and see it gone. Kill
// runs without cgroup.kill: on cgroup v1 alone, and on a hybrid set with
// cgroup2's cgroup.kill hidden (as before Linux 5.14).
func TestKillThreadedZombie(t *testing.T) {
	requireRoot(t)
	bin := testutil.BuildThreadedZombie(t, t.TempDir())
	all := cgroupMounts(t)
	hideCgroupKill(t)

	for _, tc := range []struct {
		name   string
		mounts []testMount
	}{{"cgroup v1", v1Only(all)}, {"hybrid without cgroup.kill", all}} {
		t.Run("Kill/"+tc.name, func(t *testing.T) {
			dirs := makeCgroups(t, mountpoints(tc.mounts), uniqueName(t))
			z := startThreadedZombie(t, bin, dirs)
			set := &Set{Dirs: dirs}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			n, err := set.Kill(ctx)
			if err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if n != 1 {
				t.Errorf("Kill signalled %d, want 1", n)
			}
			assertExited(t, z)
			if _, err := set.Remove(ctx); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			assertNoDirs(t, dirs...)
		})
	}

	t.Run("KillMember", func(t *testing.T) {
		name := uniqueName(t)
		dirs := makeCgroups(t, mountpoints(v1Only(all)), name)
		z := startThreadedZombie(t, bin, dirs)
		set, errs := Find(Evidence{CgroupsPath: "/" + name})
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		if !set.Contains(z.pid) {
			t.Fatalf("Contains(%d) = false for a process whose main thread exited while another runs", z.pid)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		killed, err := set.KillMember(ctx, z.pid)
		if !killed || err != nil {
			t.Fatalf("KillMember = %v, %v; want true, nil", killed, err)
		}
		assertExited(t, z)
		if set.Contains(z.pid) {
			t.Error("Contains is true once the process has exited")
		}
	})

	t.Run("KillVerified", func(t *testing.T) {
		z := startThreadedZombie(t, bin, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		killed, err := KillVerified(ctx, z.pid, z.start)
		if !killed || err != nil {
			t.Fatalf("KillVerified = %v, %v; want true, nil", killed, err)
		}
		assertExited(t, z)
		if killed, err := KillVerified(ctx, z.pid, z.start); killed || err != nil {
			t.Errorf("KillVerified on the exited process = %v, %v; want false, nil", killed, err)
		}
	})
}

// hideCgroupKill makes Kill look for a cgroup.kill that does not exist:
// cgroup2 then gets the freeze fallback of kernels before 5.14.
func hideCgroupKill(t *testing.T) {
	t.Helper()
	old := v2KillFile
	v2KillFile = "cgroup.kill-hidden-by-test"
	t.Cleanup(func() { v2KillFile = old })
}

// startThreadedZombie starts the helper in dirs (none: where it is) and
// returns it once its main thread has exited while the other runs.
func startThreadedZombie(t *testing.T, bin string, dirs []string) testProc {
	t.Helper()
	var p testProc
	testutil.StartThreadedZombie(t, bin, func(pid int) {
		p = identify(t, pid)
		moveInto(t, pid, dirs)
	})
	if !testutil.Running(p.pid) {
		t.Fatalf("pid %d: not running after its main thread exited", p.pid)
	}
	return p
}

// assertExited checks, by a pidfd, that the process has exited.
func assertExited(t *testing.T, p testProc) {
	t.Helper()
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return
		}
		t.Fatalf("pidfd of %d: %v", p.pid, err)
	}
	defer unix.Close(fd)
	if !pidfdExited(fd) || testutil.Running(p.pid) {
		t.Errorf("pid %d has not exited: a thread of it still runs", p.pid)
	}
}

// TestPidfdWithoutNonblock: before Linux 5.10, pidfd_open(pid,
// PIDFD_NONBLOCK) fails with EINVAL. That kernel is emulated by a seccomp
// filter on one locked OS thread; KillVerified, KillMember and Kill must
// still signal and wait for their process from that thread.
func TestPidfdWithoutNonblock(t *testing.T) {
	requireRoot(t)
	name := uniqueName(t)
	dirs := makeCgroups(t, mountpoints(v1Only(cgroupMounts(t))), name)
	_, verified := startSleep(t)
	_, member := startSleep(t)
	moveInto(t, member.pid, dirs)
	set, errs := Find(Evidence{CgroupsPath: "/" + name})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	hideCgroupKill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// member goes first (KillMember); Kill then finds inCgroup alone.
	_, inCgroup := startSleep(t)
	moveInto(t, inCgroup.pid, dirs)

	type result struct {
		what   string
		killed bool
		err    error
	}
	done := make(chan []result, 1)
	go func() {
		// The thread is never unlocked: it exits with the goroutine, and
		// its filter with it.
		runtime.LockOSThread()
		if err := refusePidfdNonblock(); err != nil {
			done <- []result{{what: "seccomp", err: err}}
			return
		}
		var out []result
		fd, err := unix.PidfdOpen(verified.pid, unix.PIDFD_NONBLOCK)
		if err == nil {
			unix.Close(fd)
		}
		out = append(out, result{what: "emulation: pidfd_open with PIDFD_NONBLOCK", err: err})
		k, err := KillVerified(ctx, verified.pid, verified.start)
		out = append(out, result{"KillVerified", k, err})
		k, err = set.KillMember(ctx, member.pid)
		out = append(out, result{"KillMember", k, err})
		n, err := set.Kill(ctx)
		out = append(out, result{"Kill", n == 1, err})
		done <- out
	}()
	res := <-done
	if res[0].what == "seccomp" {
		t.Fatalf("install the seccomp filter: %v", res[0].err)
	}
	if !errors.Is(res[0].err, unix.EINVAL) {
		t.Fatalf("%s = %v; want EINVAL (the emulated kernel)", res[0].what, res[0].err)
	}
	for _, r := range res[1:] {
		if !r.killed || r.err != nil {
			t.Errorf("%s on a kernel without PIDFD_NONBLOCK = %v, %v; want the process killed, no error", r.what, r.killed, r.err)
		}
	}
	assertGone(t, verified, member, inCgroup)
}

// refusePidfdNonblock installs, on the calling thread only, a seccomp
// filter that fails pidfd_open with EINVAL when its flags hold
// PIDFD_NONBLOCK (O_NONBLOCK), as kernels before 5.10 do.
func refusePidfdNonblock() error {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		return errors.New("seccomp emulation written for amd64 and arm64 only")
	}
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		arch = unix.AUDIT_ARCH_AARCH64
	}
	const (
		offNr    = 0  // seccomp_data.nr
		offArch  = 4  // seccomp_data.arch
		offArg1  = 24 // seccomp_data.args[1], low half (little endian)
		ldAbsW   = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jsetK    = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
		retK     = unix.BPF_RET | unix.BPF_K
		retAllow = unix.SECCOMP_RET_ALLOW
	)
	prog := []unix.SockFilter{
		{Code: ldAbsW, K: offArch},
		{Code: jeqK, K: arch, Jt: 1, Jf: 0},
		{Code: retK, K: retAllow},
		{Code: ldAbsW, K: offNr},
		{Code: jeqK, K: unix.SYS_PIDFD_OPEN, Jt: 1, Jf: 0},
		{Code: retK, K: retAllow},
		{Code: ldAbsW, K: offArg1},
		{Code: jsetK, K: unix.PIDFD_NONBLOCK, Jt: 0, Jf: 1},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EINVAL)},
		{Code: retK, K: retAllow},
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return e
	}
	return nil
}

// TestRemoveHonoursDeadline: removing a cgroup tree stops when ctx is
// done, and says what it left; walking one in Kill does too.
func TestRemoveHonoursDeadline(t *testing.T) {
	requireRoot(t)
	var pids string
	for _, m := range cgroupMounts(t) {
		if m.subsys == "pids" {
			pids = m.mountpoint
		}
	}
	if pids == "" {
		t.Fatal("this test needs the v1 pids hierarchy")
	}
	name := uniqueName(t)
	dirs := makeCgroups(t, []string{pids}, name)
	for i := 0; i < 50; i++ {
		if err := os.Mkdir(filepath.Join(dirs[0], fmt.Sprintf("c%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	set := &Set{Dirs: dirs}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()

	if _, err := set.Kill(expired); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Kill with an expired ctx on a tree = %v; want an error wrapping the deadline", err)
	}
	removed, err := set.Remove(expired)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Remove with an expired ctx = %v (removed %d); want an error wrapping the deadline", err, len(removed))
	} else if !strings.Contains(err.Error(), dirs[0]) {
		t.Errorf("Remove's error %q does not name %s", err, dirs[0])
	}
	if len(removed) > 0 {
		t.Errorf("Remove with an expired ctx removed %d cgroups", len(removed))
	}
	if _, err := os.Stat(dirs[0]); err != nil {
		t.Errorf("the tree's top %s: %v", dirs[0], err)
	}

	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := set.Remove(ctx); err != nil {
		t.Fatalf("Remove in time: %v", err)
	}
	assertNoDirs(t, dirs...)
}

// TestRelativeCgroupsPathNotUsed: a relative cgroupsPath was resolved by
// runc against the cgroup of the shim that created the container; against
// the caller's cgroup it names someone else's. Find must not use it: here
// it would name a bystander's cgroup below this process's own.
func TestRelativeCgroupsPathNotUsed(t *testing.T) {
	requireRoot(t)
	own, err := readProcCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rel := uniqueName(t) + "/ctr"
	// Where a resolution against this process's cgroup lands, in every v1
	// hierarchy where this process is in the root cgroup (so that the test
	// needs no cgroup of its own).
	var mounts []string
	for _, m := range v1Only(cgroupMounts(t)) {
		for k, p := range own {
			if p == "/" && k != "" && strings.Contains(","+k+",", ","+m.subsys+",") {
				mounts = append(mounts, m.mountpoint)
			}
		}
	}
	if len(mounts) == 0 {
		t.Fatal("this process is in no v1 root cgroup; the test needs one")
	}
	dirs := makeCgroups(t, mounts, rel)
	_, bystander := startSleep(t)
	moveInto(t, bystander.pid, dirs)

	set, errs := Find(Evidence{CgroupsPath: rel})
	if len(set.Dirs) > 0 {
		t.Errorf("Find(relative %q) = %v; want nothing (resolved against the caller's cgroup)", rel, set.Dirs)
	}
	if len(errs) == 0 || !strings.Contains(errors.Join(errs...).Error(), "relative") {
		t.Errorf("Find(relative %q) errors = %v; want one saying the relative path is not used", rel, errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = set.Kill(ctx)
	_, _ = set.Remove(ctx)
	assertAlive(t, bystander)
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("bystander's cgroup %s: %v", d, err)
		}
	}
}

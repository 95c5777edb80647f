package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// exitFile is where containerd 2.4's shim records the init's exit.
const exitFile = "exit.json"

// TestExitStatusRecorded: the container's init exits with a status of its
// own (42) while its shim is alive and containerd is stopped; then the
// shim is killed and the delete is run as containerd runs it. containerd
// 2.4's shim records the exit in the bundle (exit.json): the delete must
// answer that status and pid, not 137. On lines that record nothing, 137.
func TestExitStatusRecorded(t *testing.T) {
	const status = 42
	type run struct {
		s shimUnderTest
		c *harness.Container
	}
	var runs []run
	for _, s := range shims {
		c := startContainer(t, shared, s, caseID("init exits 42", s.name), func(cfg *harness.ContainerConfig) {
			cfg.Args = []string{"sh", "-c", "trap 'exit 42' TERM; sleep 1000000 & sleep 1000001 & wait"}
		})
		runs = append(runs, run{s, c})
	}
	shared.KeepServing(t)
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, r := range runs {
		t.Run(r.s.name, func(t *testing.T) {
			c := r.c
			if err := unix.Kill(c.Init.Pid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			left := harness.WaitGone(cctx, []harness.Proc{c.Init})
			cancel()
			if len(left) > 0 {
				t.Fatalf("init %s did not exit on SIGTERM", c.Init)
			}
			// The shim handles the exit (and 2.4's writes exit.json) before
			// it is killed.
			recorded := harness.Poll(2*time.Second, 20*time.Millisecond, func() bool {
				_, err := os.Stat(filepath.Join(c.Bundle, exitFile))
				return err == nil
			})
			if err := c.KillShim(); err != nil {
				t.Fatal(err)
			}
			del := c.RunDelete(ctx)
			res := waitResidue(ctx, r.s, c, false)
			cell := outcome(res, exitCodes(del))
			if del.Response != nil {
				cell += ", status " + strconv.Itoa(int(del.Response.ExitStatus))
			}
			results.record("init exited 42 before the shim died", r.s.name, cell)
			if !r.s.asserted {
				t.Logf("with %s: %s", r.s.name, cell)
				return
			}
			if recordsExit(shared.Version) && !recorded {
				t.Fatalf("containerd %s's shim wrote no %s: the case proves nothing", shared.Version, exitFile)
			}
			want, wantPid := exitStatusKilled, c.Init.Pid
			if recorded {
				want = status
			}
			switch resp := del.Response; {
			case del.ExitCode != 0:
				t.Errorf("delete: exit %d, stderr:\n%s", del.ExitCode, del.Stderr)
			case resp == nil:
				t.Errorf("stdout %q is not a DeleteResponse", del.Stdout)
			case int(resp.ExitStatus) != want || int(resp.Pid) != wantPid:
				t.Errorf("DeleteResponse status %d pid %d, want status %d pid %d (exit.json recorded: %v)", resp.ExitStatus, resp.Pid, want, wantPid, recorded)
			}
			checkClean(t, res)
		})
	}
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
}

// recordsExit says whether containerd of version v (as the daemon reports
// it, "v2.4.2", "1.6.20~ds1") has a runc shim that writes exit.json: 2.4
// and later (containerd PR #14113).
func recordsExit(v string) bool {
	v = strings.TrimPrefix(v, "v")
	var major, minor int
	for i, part := range strings.SplitN(v, ".", 3) {
		n := 0
		for _, c := range part {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
		}
		if i == 0 {
			major = n
		} else if i == 1 {
			minor = n
		}
	}
	return major > 2 || major == 2 && minor >= 4
}

// TestMountThatWillNotGo: a host directory is bind-mounted in the bundle
// and will not unmount (our binary built with the failpoint tag fails
// umount(2) for it: a mount that cannot be unmounted). containerd is
// killed, the shim is killed, containerd restarts and runs our delete,
// which must fail and leave the task directory. containerd 2.x then
// removes the bundle anyway (core/runtime/v2 bundle.Delete); the guard our
// delete left must stop that removal before it crosses the mount: the
// host data survives. 1.6/1.7 leave the bundle after a failed delete.
func TestMountThatWillNotGo(t *testing.T) {
	s := shimUnderTest{name: "ours (failpoint)", runtime: runtimeFailpoint, binary: failpointShim, asserted: true}
	c := startContainer(t, shared, s, caseID("mount will not go", "ours-fp"))
	src, err := c.BindHostDir(stuckMount)
	if err != nil {
		t.Fatal(err)
	}
	shared.KeepServing(t)
	if err := shared.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.KillShim(); err != nil {
		t.Fatal(err)
	}
	_, logOff := shared.LogSince(0)
	ctx := context.Background()
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	// containerd runs the delete and (2.x) its own removal during start-up,
	// before it serves: by now both are done.
	log, _ := shared.LogSince(logOff)
	// The killed processes may take a moment to be gone (a pid
	// namespace's init waits for its zombies to be reaped).
	var res harness.Residue
	harness.Poll(settle, 50*time.Millisecond, func() bool {
		res = c.Residue(ctx, false)
		return len(res.Of(harness.KindProcess)) == 0
	})
	lost := res.Of(harness.KindBindSource)
	results.record("a bundle mount will not unmount, containerd restarted", "ours", outcome(res))
	if len(lost) > 0 {
		t.Errorf("host data behind the stuck mount changed:\n%s", lost)
	}
	if procs := res.Of(harness.KindProcess); len(procs) > 0 {
		t.Errorf("container processes survived the delete:\n%s", procs)
	}
	for _, p := range []string{filepath.Join(src, "data.txt"), filepath.Join(src, "sub", "deeper", "db.bin")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("host file %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Bundle, "rootfs", ".containerd-shim-runc-v2-robust-keep")); err != nil {
		t.Errorf("the guard is not in the task directory (%v): the bundle was removed or never guarded", err)
	}
	if !strings.Contains(log, "a mount under it could not be removed") {
		t.Errorf("containerd's log does not show our delete refusing; log of the restart:\n%s", log)
	}
	if t.Failed() {
		t.Logf("containerd log of the restart:\n%s", log)
	}
}

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// TestGuardRootfsNotADirectory: a host directory is bind-mounted in the
// bundle (beside rootfs) and will not unmount (the failpoint binary), and
// rootfs is no directory: a symlink to a host directory. containerd is
// killed, the shim is killed, containerd restarts and runs our delete,
// which must fail and leave the task directory guarded. containerd 2.x
// then removes the bundle anyway: os.Remove(rootfs) would take the symlink
// and the RemoveAll after it cross the mount. The guard replaces the
// symlink by a directory holding it, which stops that removal: the host
// data behind the mount and the symlink's target survive. (1.6/1.7 leave
// the bundle after a failed delete.)
func TestGuardRootfsNotADirectory(t *testing.T) {
	s := shimUnderTest{name: "ours (failpoint)", runtime: runtimeFailpoint, binary: failpointShim, asserted: true}
	c := startContainer(t, shared, s, caseID("rootfs symlink, mount will not go", "ours-fp"))
	src, err := c.BindHostDir(stuckMount)
	if err != nil {
		t.Fatal(err)
	}
	sn := newSentinel(t)
	rootfs := filepath.Join(c.Bundle, "rootfs")
	if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(rootfs); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sn.dir, rootfs); err != nil {
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
	log, _ := shared.LogSince(logOff)
	var res harness.Residue
	harness.Poll(settle, 50*time.Millisecond, func() bool {
		res = c.Residue(ctx, false)
		return len(res.Of(harness.KindProcess)) == 0
	})
	if lost := res.Of(harness.KindBindSource); len(lost) > 0 {
		t.Errorf("host data behind the stuck mount changed:\n%s", lost)
	}
	for _, p := range []string{filepath.Join(src, "data.txt"), filepath.Join(src, "sub", "deeper", "db.bin")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("host file %s: %v", p, err)
		}
	}
	if bad := sn.intact(); bad != "" {
		t.Errorf("host objects outside the task changed: %s", bad)
	}
	fi, err := os.Lstat(rootfs)
	switch {
	case err != nil:
		t.Errorf("rootfs: %v: the bundle was removed", err)
	case !fi.IsDir():
		t.Errorf("rootfs is still %s: the guard was not placed", fi.Mode().Type())
	}
	if _, err := os.Stat(filepath.Join(rootfs, ".containerd-shim-runc-v2-robust-keep")); err != nil {
		t.Errorf("the guard is not in the task directory (%v)", err)
	}
	if !strings.Contains(log, "a mount under it could not be removed") {
		t.Errorf("containerd's log does not show our delete refusing")
	}
	if t.Failed() {
		t.Logf("containerd log of the restart:\n%s", log)
	}
}

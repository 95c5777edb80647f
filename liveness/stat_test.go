package liveness

import (
	"os/exec"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestExitedThreadedZombie: a process whose main thread exited while
// another thread runs shows "Z" in /proc/<pid>/stat; it has not exited. A
// real zombie has.
func TestExitedThreadedZombie(t *testing.T) {
	bin := testutil.BuildThreadedZombie(t, t.TempDir())
	z := testutil.StartThreadedZombie(t, bin, nil)
	st, err := ReadStat(z.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'Z' {
		t.Fatalf("stat of the threaded zombie = %+v; want state Z", st)
	}
	if st.Exited() {
		t.Errorf("Exited() = true for pid %d, whose second thread runs", z.Process.Pid)
	}

	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Wait() })
	if !testutil.Poll(5*time.Second, time.Millisecond, func() bool {
		st, err := ReadStat(cmd.Process.Pid)
		return err == nil && st.State == 'Z'
	}) {
		t.Fatal("true did not become a zombie")
	}
	if st, _ := ReadStat(cmd.Process.Pid); !st.Exited() {
		t.Errorf("stat of a zombie = %+v; want Exited()", st)
	}
}

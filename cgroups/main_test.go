package cgroups

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain makes the test binary the subreaper of the processes it starts:
// PID 1 may not reap orphans here, so killed grandchildren would stay
// zombies forever. They are reaped once all tests are done (zombies count
// as exited in the tests meanwhile).
func TestMain(m *testing.M) {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	code := m.Run()
	for {
		var ws unix.WaitStatus
		if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); pid <= 0 || err != nil {
			break
		}
	}
	os.Exit(code)
}

package deletion

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestSandboxDeletesItsDeadContainers lays out a containerd 2.x namespace
// directory: a sandbox task whose shim is dead, two containers that joined
// its shim (a `sandbox` file naming it, bootstrap.json naming the same
// socket), each with a live process in its own cgroup, and three tasks
// that must not be touched: one naming the sandbox but another socket, one
// naming another sandbox, and one whose shim still answers on the same
// address. The sandbox's delete must delete exactly the two members.
func TestSandboxDeletesItsDeadContainers(t *testing.T) {
	testutil.NeedRoot(t)
	nsDir := filepath.Join(t.TempDir(), testNS)
	sockDir := t.TempDir()
	deadSock := filepath.Join(sockDir, "dead")
	testutil.DeadSocket(t, deadSock)
	otherSock := filepath.Join(sockDir, "other")
	testutil.DeadSocket(t, otherSock)
	boot := func(sock string) string {
		return fmt.Sprintf(`{"version":3,"address":"unix://%s","protocol":"ttrpc"}`, sock)
	}
	mk := func(id string, files map[string]string) string {
		t.Helper()
		dir := filepath.Join(nsDir, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(sockDir, filepath.Join(dir, "s")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	// member makes a container task with a live process in a cgroup of its
	// own (proof by membership) and returns its dir and the process.
	member := func(id, sandbox, sock string) (string, int, []string) {
		t.Helper()
		p := testutil.StartSleeper(t)
		rel := "/" + testutil.RandID("robust-sandboxtest") + "/" + id
		cgs := testutil.ContainerCgroup(t, rel, p.Process.Pid)
		dir := mk(id, map[string]string{
			"sandbox":        sandbox,
			"bootstrap.json": boot(sock),
			"config.json":    testutil.SpecWithCgroup(t, rel),
			"init.pid":       strconv.Itoa(p.Process.Pid),
		})
		return dir, p.Process.Pid, cgs
	}
	sandboxID := testutil.RandID("pod")
	sandbox := mk(sandboxID, map[string]string{"bootstrap.json": boot(deadSock)})
	m1, m1pid, m1cg := member(testutil.RandID("ctr-a"), sandboxID, deadSock)
	m2, m2pid, m2cg := member(testutil.RandID("ctr-b"), sandboxID, deadSock)
	otherSockDir, otherSockPid, _ := member(testutil.RandID("ctr-othersock"), sandboxID, otherSock)
	otherPodDir, otherPodPid, _ := member(testutil.RandID("ctr-otherpod"), "another-pod", deadSock)

	rep := mustDelete(t, sandbox, sandboxID)
	testutil.AssertGone(t, append(append([]string{sandbox, m1, m2}, m1cg...), m2cg...)...)
	for _, pid := range []int{m1pid, m2pid} {
		if !testutil.Poll(2*time.Second, 20*time.Millisecond, func() bool { return !testutil.Alive(pid) }) {
			t.Errorf("member process %d survived", pid)
		}
	}
	for _, keep := range []struct {
		dir string
		pid int
	}{{otherSockDir, otherSockPid}, {otherPodDir, otherPodPid}} {
		if _, err := os.Stat(keep.dir); err != nil {
			t.Errorf("%s was touched: %v", keep.dir, err)
		}
		if !testutil.Alive(keep.pid) {
			t.Errorf("process %d of a task that is not the sandbox's was killed", keep.pid)
		}
	}
	var found bool
	for _, s := range rep.Steps {
		if s.Step == StepSandbox {
			found = true
			if s.Outcome != OutcomeDone || len(s.Did) != 2 {
				t.Errorf("sandbox step: %+v", s)
			}
		}
	}
	if !found {
		t.Error("no sandbox step in the report")
	}

	// A member whose shim answers on the same address (the shim is not
	// dead after all): never touched.
	liveSock := filepath.Join(sockDir, "live")
	testutil.Listen(t, liveSock)
	sandbox2ID := testutil.RandID("pod")
	sandbox2 := mk(sandbox2ID, map[string]string{"bootstrap.json": boot(liveSock)})
	liveMember, livePid, _ := member(testutil.RandID("ctr-live"), sandbox2ID, liveSock)
	mustDelete(t, sandbox2, sandbox2ID)
	if _, err := os.Stat(liveMember); err != nil || !testutil.Alive(livePid) {
		t.Errorf("a member whose shim answers was deleted (%v) or its process killed", err)
	}
}

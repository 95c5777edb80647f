package deletion

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
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
	sandbox := mk(sandboxID, map[string]string{"bootstrap.json": boot(deadSock), "config.json": criSandboxSpec})
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
			deleted := 0
			for _, did := range s.Did {
				if strings.HasPrefix(did, "deleted container task ") {
					deleted++
				}
			}
			// Partial: the task naming this sandbox with another socket is left, and said so.
			if s.Outcome != OutcomePartial || deleted != 2 || len(s.Problems) != 1 {
				t.Errorf("sandbox step: %+v", s)
			}
		}
	}
	if !found {
		t.Error("no sandbox step in the report")
	}

	// containerd 2.x runs the sandbox's delete when it closes its own
	// connection to a shim that still serves the pod: the shim answers on
	// the same address, so neither it, its socket nor the member is
	// touched.
	liveSock := filepath.Join(sockDir, "live")
	sandbox2ID := testutil.RandID("pod")
	shim := testutil.FakeShim(t, testNS, sandbox2ID, liveSock, testutil.ShimAnswers)
	sandbox2 := mk(sandbox2ID, map[string]string{"bootstrap.json": boot(liveSock), "config.json": criSandboxSpec})
	liveMember, livePid, _ := member(testutil.RandID("ctr-live"), sandbox2ID, liveSock)
	rep2, err := Delete(context.Background(), Request{Namespace: testNS, ID: sandbox2ID, Bundle: sandbox2, LiveShim: LeaveLiveShim})
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, rep2.Text())
	}
	t.Logf("report:\n%s", rep2.Text())
	if _, err := os.Stat(liveMember); err != nil || !testutil.Alive(livePid) {
		t.Errorf("a member whose shim answers was deleted (%v) or its process killed", err)
	}
	if !testutil.Alive(shim.Process.Pid) {
		t.Errorf("the sandbox's shim %d, which answers, was signalled", shim.Process.Pid)
	}
	if _, err := os.Stat(liveSock); err != nil {
		t.Errorf("the live shim's socket was touched: %v", err)
	}
	if !strings.Contains(rep2.Text(), "shim alive: left") {
		t.Errorf("report does not say the live shim was left:\n%s", rep2.Text())
	}
	for _, s := range rep2.Steps {
		if s.Step == StepSandbox {
			t.Errorf("a sandbox step ran under a live shim: %+v", s)
		}
	}
}

// TestSandboxDeletesStrandedContainers: containerd 2.0–2.3 remove a
// joined container's task directory without any delete when its shim
// died, leaving runc's state, the processes and the cgroups. The sandbox's
// delete finds them in runc's state by runc's own labels (its bundle under
// this namespace's state directory, the CRI sandbox id) and deletes them;
// a stranded container of another sandbox, or whose bundle label names
// another directory, is left alone.
func TestSandboxDeletesStrandedContainers(t *testing.T) {
	testutil.NeedRoot(t)
	nsDir := filepath.Join(t.TempDir(), testNS)
	sandboxID := testutil.RandID("pod")
	sandbox := filepath.Join(nsDir, sandboxID)
	if err := os.MkdirAll(filepath.Join(sandbox, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "s")
	testutil.DeadSocket(t, sock)
	for name, content := range map[string]string{"address": "unix://" + sock, "config.json": criSandboxSpec} {
		if err := os.WriteFile(filepath.Join(sandbox, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// stranded leaves runc state (default root) for a container whose task
	// directory is gone, with a live process in a cgroup of its own.
	stranded := func(id string, labels ...string) (stateDir string, pid int, cgs []string) {
		t.Helper()
		p := testutil.StartSleeper(t)
		rel := "/" + testutil.RandID("robust-strandedtest") + "/" + id
		cgs = testutil.ContainerCgroup(t, rel, p.Process.Pid)
		paths := map[string]string{}
		for i, d := range cgs {
			paths[strconv.Itoa(i)] = d
		}
		stateDir = filepath.Join(bundle.DefaultRuncRoot, testNS, id)
		if err := os.MkdirAll(stateDir, 0o711); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(stateDir) })
		st := map[string]any{
			"id": id, "init_process_pid": p.Process.Pid, "init_process_start": testutil.StartTime(t, p.Process.Pid),
			"cgroup_paths": paths,
			"config":       map[string]any{"cgroups": map[string]any{"path": rel}, "labels": labels},
		}
		writeJSONFile(t, filepath.Join(stateDir, "state.json"), st)
		return stateDir, p.Process.Pid, cgs
	}
	mID := testutil.RandID("ctr-stranded")
	mState, mPid, mCgs := stranded(mID, sandboxIDLabel+"="+sandboxID, "bundle="+filepath.Join(nsDir, mID))
	oID := testutil.RandID("ctr-otherpod")
	oState, oPid, _ := stranded(oID, sandboxIDLabel+"=another-pod", "bundle="+filepath.Join(nsDir, oID))
	bID := testutil.RandID("ctr-elsewhere")
	bState, bPid, _ := stranded(bID, sandboxIDLabel+"="+sandboxID, "bundle=/elsewhere/"+bID)

	mustDelete(t, sandbox, sandboxID)
	testutil.AssertGone(t, append([]string{sandbox, mState}, mCgs...)...)
	if !testutil.Poll(2*time.Second, 20*time.Millisecond, func() bool { return !testutil.Alive(mPid) }) {
		t.Errorf("stranded member %d survived", mPid)
	}
	for _, keep := range []struct {
		state string
		pid   int
	}{{oState, oPid}, {bState, bPid}} {
		if _, err := os.Stat(keep.state); err != nil || !testutil.Alive(keep.pid) {
			t.Errorf("runc state %s (%v) or process %d of a task not proven the sandbox's was touched", keep.state, err, keep.pid)
		}
	}
}

// criSandboxSpec is a pod sandbox's config.json as CRI writes it, as far as
// the delete path reads it.
const criSandboxSpec = `{"ociVersion":"1.1.0","annotations":{"io.kubernetes.cri.container-type":"sandbox"}}`

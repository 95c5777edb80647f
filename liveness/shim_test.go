package liveness

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// listeningShim starts a fake shim for ns/id (testutil.FakeShim, silent)
// that holds, as fd 3, a unix socket listening at sock. Cleanup kills it.
func listeningShim(t *testing.T, ns, id, sock string) *exec.Cmd {
	t.Helper()
	return testutil.FakeShim(t, ns, id, sock, testutil.ShimSilent)
}

func TestTaskShims(t *testing.T) {
	dir := t.TempDir()
	ns := "shims-ns"
	id := testutil.RandID("task")
	sock := filepath.Join(dir, "sock")
	real := listeningShim(t, ns, id, sock)

	// Claimants: the same command line without the socket; one listening
	// on another socket; a delete for the task; the right socket but the
	// command line of another task.
	claimant := fakeShim(t, ns, id)
	otherSock := listeningShim(t, ns, id, filepath.Join(dir, "other"))
	deleting := fakeShim(t, ns, id, "-bundle", "/x", "delete")
	otherID := id + "-other"
	otherTaskSock := filepath.Join(dir, "other-task")
	otherTask := listeningShim(t, ns, otherID, otherTaskSock)

	p := NewProber()
	b := &bundle.Bundle{Namespace: ns, ID: id, Address: "unix://" + sock}
	proven, unproven := p.TaskShims(b)
	if len(proven) != 1 || proven[0].Pid != real.Process.Pid {
		t.Fatalf("proven = %+v, want only the listener %d", proven, real.Process.Pid)
	}
	if !strings.Contains(proven[0].Proof, "listens on socket "+sock) || proven[0].Start == 0 {
		t.Errorf("proof = %+v", proven[0])
	}
	all := strings.Join(unproven, "\n")
	for _, c := range []*exec.Cmd{claimant, otherSock} {
		if !strings.Contains(all, "process "+itoa(c.Process.Pid)+" ") {
			t.Errorf("claimant %d not reported as unproven: %q", c.Process.Pid, unproven)
		}
	}
	for _, c := range []*exec.Cmd{deleting, otherTask} {
		if strings.Contains(all, "process "+itoa(c.Process.Pid)+" ") {
			t.Errorf("pid %d (not a claimant of %s/%s) reported: %q", c.Process.Pid, ns, id, unproven)
		}
	}

	// The socket of another task's shim proves nothing for this task.
	b2 := &bundle.Bundle{Namespace: ns, ID: id, Address: "unix://" + otherTaskSock}
	if proven, _ := p.TaskShims(b2); len(proven) != 0 {
		t.Errorf("another task's socket: proven = %+v, want none", proven)
	}
	// No address: only the init's parent could prove it.
	if proven, unproven := p.TaskShims(&bundle.Bundle{Namespace: ns, ID: id}); len(proven) != 0 || len(unproven) != 3 {
		t.Errorf("no address: proven = %+v, unproven = %q; want none and 3", proven, unproven)
	}
	// Other namespace: nothing at all.
	if proven, unproven := p.TaskShims(&bundle.Bundle{Namespace: "other", ID: id, Address: "unix://" + sock}); len(proven)+len(unproven) != 0 {
		t.Errorf("other namespace: proven = %+v, unproven = %q", proven, unproven)
	}
}

// TestTaskShimsInitParent: a shim proven by being the parent of the
// container's init (runc state pid + start time), with no socket.
func TestTaskShimsInitParent(t *testing.T) {
	ns, id := "shims-ns", testutil.RandID("parent")
	// The fake shim's child sleep plays the container's init.
	sh := fakeShim(t, ns, id)
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		child = childOf(sh.Process.Pid)
		time.Sleep(5 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("fake shim has no child")
	}
	st, err := ReadStat(child)
	if err != nil {
		t.Fatal(err)
	}
	p := NewProber()
	for _, tc := range []struct {
		name  string
		start uint64
		want  int
	}{
		{"start time matches", st.Start, 1},
		{"start time differs (pid reused)", st.Start + 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &bundle.Bundle{Namespace: ns, ID: id, State: &bundle.RuncState{InitProcessPid: child, InitProcessStartTime: tc.start}}
			proven, unproven := p.TaskShims(b)
			if len(proven) != tc.want {
				t.Fatalf("proven = %+v, unproven = %q; want %d", proven, unproven, tc.want)
			}
			if tc.want == 1 && (proven[0].Pid != sh.Process.Pid || !strings.Contains(proven[0].Proof, "parent of the container's init")) {
				t.Errorf("proven = %+v, want shim %d as init's parent", proven[0], sh.Process.Pid)
			}
		})
	}
}

func TestParseNetUnix(t *testing.T) {
	in := "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01   123 /run/containerd/s/abc\n" +
		"0000000000000000: 00000003 00000000 00000000 0001 03   124 /run/containerd/s/abc\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 125 /run/with space/sock\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 126 @abstract\n" +
		"0000000000000000: 00000002 00000000 00000000 0001 03 127\n"
	for _, tc := range []struct {
		path string
		want uint64
	}{
		{"/run/containerd/s/abc", 123}, // the accepted connection 124 is not listening
		{"/run/with space/sock", 125},
		{"@abstract", 126},
		{"/none", 0},
	} {
		got := parseNetUnix(bufio.NewScanner(strings.NewReader(in)), tc.path)
		if (tc.want == 0 && len(got) != 0) || (tc.want != 0 && (len(got) != 1 || !got[tc.want])) {
			t.Errorf("%s: got %v, want %d", tc.path, got, tc.want)
		}
	}
}

// childOf returns a child of pid, 0 if none. Every thread's children are
// read: a Go program forks from whichever thread runs the goroutine.
func childOf(pid int) int {
	tasks, _ := os.ReadDir("/proc/" + itoa(pid) + "/task")
	for _, task := range tasks {
		data, err := os.ReadFile("/proc/" + itoa(pid) + "/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestFindTaskShims: /proc is scanned only when something could prove a
// shim: with a dead socket and no runc state, even a claimant is not
// looked for; with a listener, the listener is found.
func TestFindTaskShims(t *testing.T) {
	dir := t.TempDir()
	ns, id := "shims-ns", testutil.RandID("find")
	claimant := fakeShim(t, ns, id)
	dead := filepath.Join(dir, "dead")
	testutil.DeadSocket(t, dead)
	if proven, unproven := FindTaskShims(&bundle.Bundle{Namespace: ns, ID: id, Address: "unix://" + dead}); len(proven)+len(unproven) != 0 {
		t.Errorf("dead socket: proven %+v, unproven %q; want nothing", proven, unproven)
	}
	live := filepath.Join(dir, "live")
	sh := listeningShim(t, ns, id, live)
	proven, unproven := FindTaskShims(&bundle.Bundle{Namespace: ns, ID: id, Address: "unix://" + live})
	// The claimant is among the unproven; sh may show a forked child of
	// its own under the same command line for an instant, also unproven.
	claimed := false
	for _, u := range unproven {
		if strings.HasPrefix(u, "process "+itoa(claimant.Process.Pid)+" ") {
			claimed = true
		}
	}
	if len(proven) != 1 || proven[0].Pid != sh.Process.Pid || !claimed {
		t.Errorf("listening shim: proven %+v, unproven %q; want shim %d and the claimant %d", proven, unproven, sh.Process.Pid, claimant.Process.Pid)
	}
}

// TestTaskShimsImpostor: a process that is not a shim binary is never
// proven the task's shim, even with the task's command line and its
// listening socket (issue 16: anything can take a shim's command line).
func TestTaskShimsImpostor(t *testing.T) {
	ns, id := "shims-ns", testutil.RandID("impostor")
	sock := filepath.Join(t.TempDir(), "sock")
	f := testutil.ListenerFile(t, sock)
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"containerd-shim-runc-v2", "-c", "sleep 1000 3>&-", "-namespace", ns, "-id", id}}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitShimCmdline(t, cmd.Process.Pid)

	b := &bundle.Bundle{Namespace: ns, ID: id, Address: "unix://" + sock}
	proven, unproven := NewProber().TaskShims(b)
	if len(proven) != 0 {
		t.Fatalf("proven = %+v: /bin/sh with a shim's command line and the socket was proven the task's shim", proven)
	}
	if all := strings.Join(unproven, "\n"); !strings.Contains(all, "process "+itoa(cmd.Process.Pid)+" ") || !strings.Contains(all, "is not a shim binary") {
		t.Errorf("unproven = %q, want the impostor %d named as no shim binary", unproven, cmd.Process.Pid)
	}
}

// waitShimCmdline waits until /proc shows pid's shim command line (sh
// reads its -c script only after exec).
func waitShimCmdline(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		args, _ := procCmdline(pid)
		if isShimCommand(args) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: command line %q never became a shim's", pid, args)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

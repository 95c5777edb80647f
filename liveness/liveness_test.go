package liveness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// fakeShim starts a process whose command line is a shim's for ns/id (argv[0]
// fakeShim starts a fake shim for ns/id with no socket (testutil.FakeShim).
func fakeShim(t *testing.T, ns, id string, action ...string) *exec.Cmd {
	t.Helper()
	return testutil.FakeShim(t, ns, id, "", testutil.ShimSilent, action...)
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	live, dead := filepath.Join(dir, "live"), filepath.Join(dir, "dead")
	testutil.Listen(t, live)
	testutil.DeadSocket(t, dead)
	plain := filepath.Join(dir, "file")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	id := testutil.RandID("probe")
	fakeShim(t, "probe-ns", id)
	fakeShim(t, "probe-ns", id+"-deleting", "-bundle", "/x", "delete")
	answering := filepath.Join(dir, "answering")
	testutil.FakeShim(t, "probe-ns", id+"-answers", answering, testutil.ShimAnswers)
	// A shim whose socket file was removed still listens on it.
	unlinked := filepath.Join(dir, "unlinked")
	testutil.FakeShim(t, "probe-ns", id+"-unlinked", unlinked, testutil.ShimSilent)
	if err := os.Remove(unlinked); err != nil {
		t.Fatal(err)
	}
	// Anything can take a shim's command line: /bin/sh claiming the task.
	impostor(t, "probe-ns", id+"-impostor")
	p := NewProber()
	for _, tc := range []struct {
		name    string
		b       bundleFields
		alive   bool
		verdict Verdict
		whyPart string
	}{
		{"a listener that never answers is hung", bundleFields{ns: "n", id: "a", address: "unix://" + live}, true, ShimHung, "got no answer"},
		{"a shim that answers (task API v2)", bundleFields{ns: "probe-ns", id: id + "-answers", address: "unix://" + answering}, true, ShimAnswers, "answered containerd.task.v2.Task.Connect"},
		{"a shim that answers (task API v3)", bundleFields{ns: "probe-ns", id: id + "-answers", address: "unix://" + answering, taskAPI: 3}, true, ShimAnswers, "answered containerd.task.v3.Task.Connect"},
		{"dead socket", bundleFields{ns: "n", id: "a", address: "unix://" + dead}, false, ShimDead, "refuses connections"},
		{"missing socket", bundleFields{ns: "n", id: "a", address: "unix://" + filepath.Join(dir, "none")}, false, ShimDead, "is missing"},
		{"regular file", bundleFields{ns: "n", id: "a", address: "unix://" + plain}, false, ShimDead, "refuses connections"},
		{"abstract, nobody", bundleFields{ns: "n", id: "a", address: "unix://@" + testutil.RandID("abstract")}, false, ShimDead, "refuses"},
		{"no address, shim process runs", bundleFields{ns: "probe-ns", id: id}, true, ShimDead, "shim process"},
		{"a shim process that does not hold the task's socket", bundleFields{ns: "probe-ns", id: id, address: "unix://" + dead}, false, ShimDead, "holds its socket"},
		{"a shim process holding the task's removed socket", bundleFields{ns: "probe-ns", id: id + "-unlinked", address: "unix://" + unlinked}, true, ShimDead, "holds the task's socket"},
		{"an impostor's command line is no shim", bundleFields{ns: "probe-ns", id: id + "-impostor"}, false, ShimDead, "no shim process"},
		{"a shim's delete is not a live shim", bundleFields{ns: "probe-ns", id: id + "-deleting"}, false, ShimDead, "no shim process"},
		{"same id, other namespace", bundleFields{ns: "other", id: id}, false, ShimDead, "no shim process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := p.Probe(tc.b.bundle())
			if st.Alive != tc.alive || st.Answer.Verdict != tc.verdict || !strings.Contains(st.Why, tc.whyPart) {
				t.Errorf("probe = %+v, want alive=%v, verdict %s, why containing %q", st, tc.alive, tc.verdict, tc.whyPart)
			}
		})
	}
}

// impostor starts /bin/sh with a shim's command line for ns/id (its
// executable is not a shim binary). Cleanup kills it.
func impostor(t *testing.T, ns, id string) *exec.Cmd {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"containerd-shim-runc-v2", "-c", "sleep 1000", "-namespace", ns, "-id", id}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		args, _ := procCmdline(cmd.Process.Pid)
		if isShimCommand(args) || time.Now().After(deadline) {
			return cmd
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseShimArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want shimProc
	}{
		{[]string{"-namespace", "k8s.io", "-id", "abc", "-address", "/run/containerd/containerd.sock"}, shimProc{namespace: "k8s.io", id: "abc"}},
		{[]string{"-namespace", "ns", "-address", "a", "-publish-binary", "b", "-id", "x", "-bundle", "/b", "-debug", "delete"}, shimProc{namespace: "ns", id: "x", action: "delete"}},
		{[]string{"--namespace=ns", "--id=x", "start"}, shimProc{namespace: "ns", id: "x", action: "start"}},
	} {
		if got := parseShimArgs(tc.args); got != tc.want {
			t.Errorf("parseShimArgs(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

// bundleFields is what the probe reads from a bundle.
type bundleFields struct {
	ns, id, address string
	taskAPI         int
}

func (f bundleFields) bundle() *bundle.Bundle {
	return &bundle.Bundle{Namespace: f.ns, ID: f.id, Address: f.address, TaskAPI: f.taskAPI}
}

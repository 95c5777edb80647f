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
// "containerd-shim-runc-v2"), running sh; Cleanup kills it.
func fakeShim(t *testing.T, ns, id string, action ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"containerd-shim-runc-v2", "-c", "sleep 1000", "-namespace", ns, "-id", id}, action...)
	cmd := &exec.Cmd{Path: "/bin/sh", Args: args}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// sh reads its -c script only after exec: wait until /proc shows argv.
	deadline := time.Now().Add(5 * time.Second)
	for {
		args, _ := procCmdline(cmd.Process.Pid)
		if isShimCommand(args) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
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
	p := NewProber()
	for _, tc := range []struct {
		name    string
		b       bundleFields
		alive   bool
		whyPart string
	}{
		{"live socket", bundleFields{ns: "n", id: "a", address: "unix://" + live}, true, "accepts connections"},
		{"dead socket", bundleFields{ns: "n", id: "a", address: "unix://" + dead}, false, "refuses connections"},
		{"missing socket", bundleFields{ns: "n", id: "a", address: "unix://" + filepath.Join(dir, "none")}, false, "is missing"},
		{"regular file", bundleFields{ns: "n", id: "a", address: "unix://" + plain}, false, "refuses connections"},
		{"abstract, nobody", bundleFields{ns: "n", id: "a", address: "unix://@" + testutil.RandID("abstract")}, false, "refuses"},
		{"no address, shim process runs", bundleFields{ns: "probe-ns", id: id}, true, "shim process"},
		{"a shim's delete is not a live shim", bundleFields{ns: "probe-ns", id: id + "-deleting"}, false, "no shim process"},
		{"same id, other namespace", bundleFields{ns: "other", id: id}, false, "no shim process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := p.Probe(tc.b.bundle())
			if st.Alive != tc.alive || !strings.Contains(st.Why, tc.whyPart) {
				t.Errorf("probe = %+v, want alive=%v, why containing %q", st, tc.alive, tc.whyPart)
			}
		})
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
type bundleFields struct{ ns, id, address string }

func (f bundleFields) bundle() *bundle.Bundle {
	return &bundle.Bundle{Namespace: f.ns, ID: f.id, Address: f.address}
}

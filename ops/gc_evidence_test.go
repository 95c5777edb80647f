package ops

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestGCMistakenStateDir: gc pointed at a directory that is not containerd's
// (--state-dir, the environment or a config's `state` gone wrong) finds
// <dir>/<x>/<y> directories holding files named options.json or runtime. None
// is a task directory: every one is skipped, said why, and left as it was.
func TestGCMistakenStateDir(t *testing.T) {
	testutil.NeedRoot(t)
	srv := filepath.Join(t.TempDir(), "srv")
	files := map[string]string{
		"webapp/site/options.json":      `{"theme": "dark"}`,
		"webapp/site/runtime":           "node\n",
		"webapp/site/index.html":        "<html></html>\n",
		"webapp/api/runtime":            "python3\n",
		"webapp/api/rootfs/data.db":     "rows\n",
		"backup/db/options.json":        "{}",
		"backup/db/config.json":         `{"ociVersion": "1.0.2"}`,
		"backup/db/rootfs/etc/hostname": "db\n",
	}
	for name, content := range files {
		p := filepath.Join(srv, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-24 * time.Hour)
	for _, d := range []string{"webapp/site", "webapp/api", "backup/db"} {
		if err := os.Chtimes(filepath.Join(srv, d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	g := GC(context.Background(), GCOptions{StateDir: srv, RuncRoot: t.TempDir(), Parallel: 2})
	t.Logf("report:\n%s", g.Text())
	for name, content := range files {
		if data, err := os.ReadFile(filepath.Join(srv, name)); err != nil || string(data) != content {
			t.Errorf("%s was touched: %v", name, err)
		}
	}
	if len(g.Tasks) != 3 {
		t.Fatalf("gc listed %d directories, want 3", len(g.Tasks))
	}
	for _, tk := range g.Tasks {
		if tk.Status != GCSkipped || tk.Action != GCLeft || !strings.Contains(tk.Why, "not a runc v2 task directory") {
			t.Errorf("%s/%s: %s, %s (%s); want skipped and left: not a task directory", tk.Namespace, tk.ID, tk.Status, tk.Action, tk.Why)
		}
	}
}

// TestGCCreationWindow: with --older-than 0s, a dead task directory with no
// shim socket recorded yet, younger than CreationWindow, may be one
// containerd is creating (2.x writes shim-binary-path when the shim's start
// returns, bootstrap.json only after it has connected): left as young. One with its socket recorded (the
// shim listened once, and no longer does) is an orphan and deleted.
func TestGCCreationWindow(t *testing.T) {
	testutil.NeedRoot(t)
	state := filepath.Join(t.TempDir(), TaskStateDirName)
	ns := testutil.RandID("gc-window")
	dead := filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	mk := func(id string, files map[string]string) string {
		dir := filepath.Join(state, ns, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("/nonexistent/root", TaskStateDirName, ns, id), filepath.Join(dir, "work")); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// containerd 2.x between the shim's `start` returning (shim-binary-path
	// written) and bootstrap.json.
	creating := mk("creating", map[string]string{"config.json": `{"ociVersion":"1.0.2"}`, "shim-binary-path": "/usr/bin/containerd-shim-runc-v2"})
	orphan := mk("orphan", map[string]string{"config.json": `{"ociVersion":"1.0.2"}`, "runtime": "", "address": "unix://" + dead})
	g := GC(context.Background(), GCOptions{StateDir: state, RuncRoot: t.TempDir(), OlderThan: 0, Parallel: 1, Namespace: ns})
	t.Logf("report:\n%s", g.Text())
	byID := map[string]GCTask{}
	for _, tk := range g.Tasks {
		byID[tk.ID] = tk
	}
	if tk := byID["creating"]; tk.Status != GCYoung || tk.Action != GCLeft {
		t.Errorf("creating: %s, %s (%s); want young and left", tk.Status, tk.Action, tk.Why)
	}
	if _, err := os.Stat(filepath.Join(creating, "config.json")); err != nil {
		t.Errorf("the task directory containerd may be creating was touched: %v", err)
	}
	if tk := byID["orphan"]; tk.Action != GCDeleted {
		t.Errorf("orphan: %s, %s (%s); want deleted", tk.Status, tk.Action, tk.Why)
	}
	testutil.AssertGone(t, orphan)
}

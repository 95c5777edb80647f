package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// runGC runs the gc command in this process, as `containerd-shim-runc-v2-robust gc args...`.
func runGC(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = cli.RunGC(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestGCFindsContainerdDirectories runs gc's command line on a containerd
// state root laid out as on a node (<state>/io.containerd.runtime.v2.task/
// <ns>/<id>, runc's state beside it), found through --config, through
// --state-dir given the state root, and refused for containerd's root.
func TestGCFindsContainerdDirectories(t *testing.T) {
	testutil.NeedRoot(t)
	t.Setenv(cli.EnvStateDir, "")
	t.Setenv(ops.EnvMetricsDir, "")
	ns, id := testutil.RandID("gccfg"), "web"
	stateRoot, containerdRoot := t.TempDir(), t.TempDir()
	taskDir := filepath.Join(stateRoot, ops.TaskStateDirName, ns, id)
	if err := os.MkdirAll(filepath.Join(taskDir, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(taskDir, "runtime"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stateRoot, "runc", ns), 0o711); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(taskDir, old, old); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(config, []byte("version = 3\nroot = '"+containerdRoot+"'\nstate = '"+stateRoot+"'\n\n[plugins]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantDir := filepath.Join(stateRoot, ops.TaskStateDirName)

	report := func(t *testing.T, stdout string) ops.GCReport {
		t.Helper()
		var g ops.GCReport
		if err := json.Unmarshal([]byte(stdout), &g); err != nil {
			t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
		}
		if g.StateDir != wantDir {
			t.Errorf("state_dir %s, want %s", g.StateDir, wantDir)
		}
		if len(g.Tasks) != 1 || g.Tasks[0].Namespace != ns || g.Tasks[0].ID != id || g.Tasks[0].Status != ops.GCOrphan {
			t.Errorf("tasks %+v, want the orphan %s/%s alone", g.Tasks, ns, id)
		}
		return g
	}

	t.Run("the state of --config", func(t *testing.T) {
		code, stdout, stderr := runGC(t, "--config", config, "--dry-run", "--format", "json")
		if code != cli.ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if g := report(t, stdout); g.StateDirFrom != "state in "+config || g.StateDirNote != "" {
			t.Errorf("from %q, note %q", g.StateDirFrom, g.StateDirNote)
		}
	})

	t.Run("--state-dir given containerd's state root", func(t *testing.T) {
		code, stdout, stderr := runGC(t, "--state-dir", stateRoot, "--dry-run", "--format", "json")
		if code != cli.ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		g := report(t, stdout)
		if g.StateDirFrom != "--state-dir" || !strings.Contains(g.StateDirNote, stateRoot+" is containerd's state directory") {
			t.Errorf("from %q, note %q", g.StateDirFrom, g.StateDirNote)
		}
		_, text, _ := runGC(t, "--state-dir", stateRoot, "--dry-run")
		if !strings.Contains(text, "note: "+stateRoot+" is containerd's state directory: swept its task state directory "+wantDir) {
			t.Errorf("the text report does not say how the state directory was understood:\n%s", text)
		}
	})

	t.Run("$"+cli.EnvStateDir+" given containerd's state root", func(t *testing.T) {
		t.Setenv(cli.EnvStateDir, stateRoot)
		code, stdout, stderr := runGC(t, "--config", config, "--dry-run", "--format", "json")
		if code != cli.ExitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if g := report(t, stdout); g.StateDirFrom != "$"+cli.EnvStateDir || g.StateDirNote == "" {
			t.Errorf("from %q, note %q", g.StateDirFrom, g.StateDirNote)
		}
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--config", filepath.Join(t.TempDir(), "missing.toml")}, "no such file"},
			{[]string{"--config", config, "--state-dir", containerdRoot}, "containerd's root directory"},
			{[]string{"--config", config, "--state-dir", filepath.Join(containerdRoot, ops.TaskStateDirName)}, "containerd's root directory"},
			{[]string{"--parallel", "0"}, "--parallel must be at least 1"},
		} {
			code, stdout, stderr := runGC(t, append(c.args, "--dry-run")...)
			if code != cli.ExitUsage || !strings.Contains(stderr, c.want) || stdout != "" {
				t.Errorf("gc %v: exit %d, stderr %q, stdout %q; want %d and %q", c.args, code, stderr, stdout, cli.ExitUsage, c.want)
			}
		}
	})

	t.Run("help", func(t *testing.T) {
		_, _, help := runGC(t, "-h")
		for _, want := range []string{"-parallel", "the default is the number of CPUs", "-config", ops.DefaultContainerdConfig, "containerd's state directory that holds it"} {
			if !strings.Contains(help, want) {
				t.Errorf("help does not mention %q:\n%s", want, help)
			}
		}
	})

	if _, err := os.Stat(taskDir); err != nil {
		t.Errorf("a dry run removed the task directory: %v", err)
	}
}

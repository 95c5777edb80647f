package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// operatorDir makes an operator's directory named name under parent: their
// own files, files named like a task's (options.json, runtime,
// config.json) and a rootfs/ with data. intact says what of it changed
// ("" when nothing).
func operatorDir(t *testing.T, parent, name string) (dir string, intact func() string) {
	t.Helper()
	dir = filepath.Join(parent, name)
	files := map[string]string{
		"index.html":         "<html>the operator's site</html>\n",
		"options.json":       `{"port": 8080}`,
		"runtime":            "node\n",
		"config.json":        `{"ociVersion": "1.0.2"}`,
		"rootfs/srv/data.db": "the operator's rows\n",
	}
	for n, content := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, func() string {
		var bad []string
		for n, content := range files {
			if data, err := os.ReadFile(filepath.Join(dir, n)); err != nil || string(data) != content {
				bad = append(bad, n)
			}
		}
		return strings.Join(bad, ", ")
	}
}

// deadSocketAt leaves a socket file nobody listens on at p, as a dead
// process leaves it, and removes it at the end.
func deadSocketAt(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	t.Cleanup(func() { os.Remove(p) })
}

// recordSocket makes the task directory name unix://addr as its shim's
// socket, in the file its containerd line uses (bootstrap.json, else
// address).
func recordSocket(t *testing.T, c *harness.Container, addr string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(c.Bundle, "bootstrap.json")); err == nil {
		data, _ := json.Marshal(map[string]any{"version": 3, "address": "unix://" + addr, "protocol": "ttrpc"})
		if err := os.WriteFile(filepath.Join(c.Bundle, "bootstrap.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.WriteFile(filepath.Join(c.Bundle, "address"), []byte("unix://"+addr), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEvidenceByHand: deletes run by hand with containerd stopped and the
// tasks' shims killed. None may remove what is not the task's:
//   - from a working directory named like the task (`cd /srv/web && ...
//     -id web delete`), the task is found through --state-dir, and the
//     working directory is left as it was;
//   - `-bundle DIR` naming an operator's directory is refused, nothing in
//     it touched;
//   - a task directory locked by a delete that does not end is waited for
//     within the delete's timeout, not forever;
//   - a dead socket named by the task's socket record is removed only when
//     containerd made it: named with 64 hex digits, in the default socket
//     directory or one only root can write (an `s` link may name any).
func TestEvidenceByHand(t *testing.T) {
	ids := []string{"ev-cwd", "ev-bundle", "ev-locked", "ev-sockname", "ev-sockdir"}
	cs := map[string]*harness.Container{}
	for _, id := range ids {
		cs[id] = startContainer(t, harness.RuntimeUpstream, nsA, id)
	}
	daemon.KeepServing(t)
	if err := daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := c.KillShim(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("the working directory is not the task", func(t *testing.T) {
		c := cs["ev-cwd"]
		dir, intact := operatorDir(t, t.TempDir(), c.Cfg.ID)
		r := run(t, dir, nil, "-namespace", nsA, "-id", c.Cfg.ID, "delete", "--state-dir", stateDir())
		if bad := intact(); bad != "" {
			t.Fatalf("the operator's working directory lost %s (exit %d)", bad, r.code)
		}
		if r.code != cli.ExitOK {
			t.Errorf("exit %d, want 0: the task is found through --state-dir", r.code)
		}
		if _, err := os.Stat(c.Bundle); err == nil {
			t.Errorf("the task directory %s is still there: the delete did not find the task through --state-dir", c.Bundle)
		}
	})

	t.Run("-bundle without evidence is refused", func(t *testing.T) {
		c := cs["ev-bundle"]
		dir, intact := operatorDir(t, t.TempDir(), c.Cfg.ID)
		r := run(t, "/", nil, "-namespace", nsA, "-id", c.Cfg.ID, "-bundle", dir, "delete")
		if bad := intact(); bad != "" {
			t.Fatalf("the operator's directory lost %s (exit %d)", bad, r.code)
		}
		if r.code == cli.ExitOK || !strings.Contains(r.stderr, "not a runc v2 task directory") {
			t.Errorf("exit %d, want a refusal saying it is not a runc v2 task directory", r.code)
		}
		if _, err := os.Stat(filepath.Join(c.Bundle, "config.json")); err != nil {
			t.Errorf("the real task directory was touched: %v", err)
		}
	})

	t.Run("a locked task directory is waited for within the timeout", func(t *testing.T) {
		c := cs["ev-locked"]
		holder, err := os.Open(c.Bundle)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, ours, "-namespace", nsA, "-id", c.Cfg.ID, "delete", "--state-dir", stateDir())
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=" + daemon.PathEnv()}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		t.Logf("exit %v after %s:\n%s", err, took, out)
		if ctx.Err() != nil {
			t.Fatalf("the delete still waited for the lock after %s", took)
		}
		if err == nil || !strings.Contains(string(out), "held by another delete") {
			t.Errorf("the delete of a locked task directory did not fail saying so")
		}
		if took > 5*time.Second {
			t.Errorf("waited %s: longer than containerd's 5 s for a delete", took)
		}
		if _, err := os.Stat(filepath.Join(c.Bundle, "config.json")); err != nil {
			t.Errorf("the locked task directory was touched: %v", err)
		}
	})

	t.Run("a dead socket not named as containerd names them is left", func(t *testing.T) {
		c := cs["ev-sockname"]
		// In the task's own socket directory: its `s` link (2.x), else
		// containerd's default.
		sockDir := "/run/containerd/s"
		if target, err := os.Readlink(filepath.Join(c.Bundle, "s")); err == nil {
			sockDir = target
		}
		if err := os.MkdirAll(sockDir, 0o711); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(sockDir, fmt.Sprintf("robust-e2e-%d.sock", os.Getpid()))
		deadSocketAt(t, sock)
		recordSocket(t, c, sock)
		r := run(t, "/", nil, "-namespace", nsA, "-id", c.Cfg.ID, "delete", "--state-dir", stateDir())
		if _, err := os.Lstat(sock); err != nil {
			t.Errorf("the dead socket %s was removed (exit %d)", sock, r.code)
		}
		if r.code != cli.ExitOK {
			t.Errorf("exit %d, want 0 (the task is deleted; the socket is not the shim's)", r.code)
		}
	})

	t.Run("a dead socket in a directory others can write is left", func(t *testing.T) {
		c := cs["ev-sockdir"]
		dir, err := os.MkdirTemp("", "ev-s")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o1777); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(dir, strings.Repeat("e5", 32))
		deadSocketAt(t, sock)
		recordSocket(t, c, sock)
		link := filepath.Join(c.Bundle, "s")
		_ = os.Remove(link)
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		r := run(t, "/", nil, "-namespace", nsA, "-id", c.Cfg.ID, "delete", "--state-dir", stateDir())
		if _, err := os.Lstat(sock); err != nil {
			t.Errorf("the dead socket %s, in a directory anyone can write, was removed (exit %d)", sock, r.code)
		}
		if r.code != cli.ExitOK {
			t.Errorf("exit %d, want 0", r.code)
		}
	})
}

// TestEvidenceGC: gc as an operator runs it.
//   - With a mistaken --state-dir, every <dir>/<x>/<y> holding files named
//     options.json or runtime is skipped and left as it was.
//   - A --config whose import is a FIFO is refused at once (gc used to wait
//     on it forever).
//   - A symbolic link in place of the metrics lock file makes the update
//     fail: no file is created where it points.
func TestEvidenceGC(t *testing.T) {
	t.Run("a mistaken state directory", func(t *testing.T) {
		srv := t.TempDir()
		site, siteIntact := operatorDir(t, filepath.Join(srv, "webapp"), "site")
		api, apiIntact := operatorDir(t, filepath.Join(srv, "webapp"), "api")
		old := time.Now().Add(-24 * time.Hour)
		for _, d := range []string{site, api} {
			if err := os.Chtimes(d, old, old); err != nil {
				t.Fatal(err)
			}
		}
		r := run(t, "/", nil, "gc", "--state-dir", srv, "--format", "json")
		t.Logf("report:\n%s", r.stdout)
		if bad := siteIntact() + apiIntact(); bad != "" {
			t.Fatalf("gc with a mistaken state directory touched the operator's files: %s", bad)
		}
		var g ops.GCReport
		if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
			t.Fatalf("stdout is not the JSON report: %v", err)
		}
		if len(g.Tasks) != 2 {
			t.Fatalf("gc listed %d directories, want 2", len(g.Tasks))
		}
		for _, tk := range g.Tasks {
			if tk.Status != ops.GCSkipped || !strings.Contains(tk.Why, "not a runc v2 task directory") {
				t.Errorf("%s/%s: %s (%s), want skipped: not a runc v2 task directory", tk.Namespace, tk.ID, tk.Status, tk.Why)
			}
		}
	})

	t.Run("a --config import that is a FIFO", func(t *testing.T) {
		dir := t.TempDir()
		if err := unix.Mkfifo(filepath.Join(dir, "fifo.toml"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(cfg, []byte("version = 2\nimports = [\"fifo.toml\"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, ours, "gc", "--config", cfg, "--dry-run")
		cmd.Env = []string{"PATH=" + daemon.PathEnv()}
		out, err := cmd.CombinedOutput()
		t.Logf("gc: %v\n%s", err, out)
		if ctx.Err() != nil {
			t.Fatal("gc still reading the FIFO after 10 s")
		}
		if !strings.Contains(string(out), "not a regular file") {
			t.Errorf("gc did not refuse the FIFO saying it is not a regular file")
		}
	})

	t.Run("a symbolic link in place of the metrics lock", func(t *testing.T) {
		metrics, elsewhere := t.TempDir(), t.TempDir()
		target := filepath.Join(elsewhere, "nologin")
		if err := os.Symlink(target, filepath.Join(metrics, ".containerd_shim_robust.lock")); err != nil {
			t.Fatal(err)
		}
		r := run(t, "/", []string{ops.EnvMetricsDir + "=" + metrics}, "gc", "--state-dir", t.TempDir(), "--dry-run")
		if _, err := os.Lstat(target); err == nil {
			t.Fatalf("gc created %s through the link in the metrics directory", target)
		}
		if !strings.Contains(r.stdout+r.stderr, "symbolic link") {
			t.Errorf("gc did not report the refused lock file")
		}
	})
}

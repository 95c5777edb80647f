package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// impostor starts /bin/sh under a shim's command line naming c's task
// (argv[0] containerd-shim-runc-v2, -namespace, -id, -address): everything
// a shim shows in /proc but its executable. With holdSocket it also binds a
// listening unix socket at the task's socket path (the dead shim's file is
// replaced) and holds it as fd 3, never accepting: the task's socket then
// accepts connections and never answers, as a hung shim's would. Cleanup
// kills it.
func impostor(t *testing.T, c *harness.Container, holdSocket bool) harness.Proc {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"containerd-shim-runc-v2", "-c", "sleep 1000004 3>&-",
		"-namespace", c.Cfg.Namespace, "-id", c.Cfg.ID, "-address", c.Daemon().Address}}
	if holdSocket {
		if err := os.Remove(c.ShimSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		ln, err := net.Listen("unix", c.ShimSocket)
		if err != nil {
			t.Fatal(err)
		}
		ul := ln.(*net.UnixListener)
		ul.SetUnlinkOnClose(false)
		f, err := ul.File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		defer ul.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if holdSocket {
			_ = os.Remove(c.ShimSocket)
		}
	})
	if !harness.Poll(5*time.Second, 5*time.Millisecond, func() bool {
		data, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline")
		return strings.HasPrefix(string(data), "containerd-shim-runc-v2\x00")
	}) {
		t.Fatalf("impostor %d never showed a shim's command line", cmd.Process.Pid)
	}
	p, err := harness.RecordProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestShimImpostor (issue 16): a process that gives itself a shim's command
// line naming a task is not the task's shim unless its executable is a
// shim binary. The task's shim is killed and containerd stopped; then:
//   - an impostor also holds the task's socket (listening, never
//     answering): containerd's delete must not signal it (it used to:
//     command line plus socket was its proof), and still cleans the
//     container;
//   - an impostor only claims the task: a delete by hand must not take the
//     task for live (it used to refuse it, exit 3, for as long as the
//     impostor ran) and cleans it.
//
// Upstream's shim signals no shim at all and has no by-hand delete of its
// own: its results are recorded beside ours.
func TestShimImpostor(t *testing.T) {
	type pair struct {
		s            shimUnderTest
		held, claims *harness.Container
	}
	var pairs []pair
	for _, s := range shims {
		pairs = append(pairs, pair{
			s:      s,
			held:   startContainer(t, shared, s, caseID("impostor holds the socket", s.name)),
			claims: startContainer(t, shared, s, caseID("impostor claims the task", s.name)),
		})
	}
	shared.KeepServing(t)
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		for _, c := range []*harness.Container{p.held, p.claims} {
			if err := c.KillShim(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	for _, p := range pairs {
		t.Run("containerd's delete, impostor holds the socket/"+p.s.name, func(t *testing.T) {
			c := p.held
			imp := impostor(t, c, true)
			res := c.RunDelete(ctx)
			alive := imp.Alive()
			waitCtx, cancel := context.WithTimeout(ctx, settle)
			left := harness.WaitGone(waitCtx, c.Procs)
			cancel()
			_, dirErr := os.Stat(c.Bundle)
			cell := "impostor left alone"
			if !alive {
				cell = "impostor KILLED"
			}
			if len(left) > 0 {
				cell += "; container processes left"
			}
			if dirErr == nil {
				cell += "; task directory left"
			}
			results.record("impostor holds the task's socket", p.s.name, cell+" ("+exitCodes(res)+")")
			if !p.s.asserted {
				t.Logf("with %s: %s", p.s.name, cell)
				return
			}
			t.Logf("delete: exit %d, stderr:\n%s", res.ExitCode, res.Stderr)
			if !alive {
				t.Errorf("the impostor %s (/bin/sh with a shim's command line and the task's socket) was signalled", imp)
			}
			if !strings.Contains(res.Stderr, "is not a shim binary") {
				t.Errorf("the delete does not say why the impostor was not signalled:\n%s", res.Stderr)
			}
			if res.ExitCode != 0 || len(left) > 0 || dirErr == nil {
				t.Errorf("the container was not cleaned: exit %d, processes left %v, task directory stat %v", res.ExitCode, left, dirErr)
			}
		})
		t.Run("by hand, impostor claims the task/"+p.s.name, func(t *testing.T) {
			if !p.s.asserted {
				results.record("impostor claims the task (delete by hand)", p.s.name, "n/a (no delete by hand)")
				return
			}
			c := p.claims
			imp := impostor(t, c, false)
			cmd := exec.CommandContext(ctx, c.Daemon().ShimPath(p.s.runtime),
				"-namespace", c.Cfg.Namespace, "-id", c.Cfg.ID,
				"--state-dir", filepath.Dir(filepath.Dir(c.Bundle)), "delete")
			cmd.Dir = os.TempDir()
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			r := waitResidue(ctx, p.s, c, false)
			cell := outcome(r, "exit "+strconv.Itoa(code))
			results.record("impostor claims the task (delete by hand)", p.s.name, cell)
			t.Logf("delete by hand: exit %d, stderr:\n%s", code, stderr.String())
			if code != 0 {
				t.Errorf("delete by hand: exit %d, want 0: an impostor's command line made the task live", code)
			}
			if !imp.Alive() {
				t.Errorf("the impostor %s was signalled", imp)
			}
			checkClean(t, r)
		})
	}
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
}

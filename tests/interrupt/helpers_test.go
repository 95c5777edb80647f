package interrupt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// settle bounds polling the residue until it is empty.
const settle = 3 * time.Second

// startContainer runs a container with our shim on the shared daemon in ns
// and registers a cleanup that removes whatever the case leaves.
// With hook, the container has the harness's OCI poststop hook: the delete
// then runs its steps one after another (the runtime's delete may read the
// bundle) instead of releasing beside unmount and remove.
func startContainer(t *testing.T, ns, id string, hook bool) *harness.Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := shared.Run(ctx, harness.ContainerConfig{Namespace: ns, ID: id, Runtime: harness.RuntimeRobust, Busybox: busybox, PoststopHook: hook})
	if err != nil {
		t.Fatalf("start container: %v\n--- containerd log (tail) ---\n%s", err, shared.LogTail(30))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// A stopped shim must not hold up the cleanup.
		_ = c.Shim.Kill()
		if err := c.Cleanup(ctx); err != nil {
			t.Errorf("harness cleanup of %s: %v", id, err)
		}
	})
	if want := shared.ShimPath(harness.RuntimeUpstream); c.ShimExe != want {
		t.Fatalf("the task is served by %s, want the delegate %s", c.ShimExe, want)
	}
	if len(c.Procs) < 4 {
		t.Fatalf("recorded %d processes, want init, 2 children and the exec'd one: %v", len(c.Procs), c.Procs)
	}
	return c
}

// claimant starts a process outside the container whose command line
// claims to be the task's shim (argv[0] containerd-shim-runc-v2, -namespace
// ns -id id) but which holds no socket and is no container's parent: a
// delete must never signal it. Cleanup kills it.
func claimant(t *testing.T, ns, id string) harness.Proc {
	t.Helper()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"containerd-shim-runc-v2", "-c", "sleep 1000004", "-namespace", ns, "-id", id, "-address", "/run/claimant.sock"}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ok := harness.Poll(5*time.Second, 5*time.Millisecond, func() bool {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		return strings.HasPrefix(string(data), "containerd-shim-runc-v2\x00")
	})
	if !ok {
		t.Fatalf("claimant %d never showed its command line", cmd.Process.Pid)
	}
	p, err := harness.RecordProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// bystander starts a process outside the container that nothing proves to
// be anyone's ("sleep"); Cleanup kills it.
func bystander(t *testing.T) harness.Proc {
	t.Helper()
	cmd := exec.Command("sleep", "1000005")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p, err := harness.RecordProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// hangShim stops the container's shim (SIGSTOP): alive, holding its socket,
// answering nothing.
func hangShim(t *testing.T, c *harness.Container) {
	t.Helper()
	if err := syscall.Kill(c.Shim.Pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP shim %s: %v", c.Shim, err)
	}
	ok := harness.Poll(2*time.Second, 5*time.Millisecond, func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Shim.Pid))
		s := string(data)
		return err == nil && strings.HasPrefix(s[strings.LastIndexByte(s, ')')+2:], "T")
	})
	if !ok {
		t.Fatalf("shim %s not stopped", c.Shim)
	}
}

// run is the outcome of one delete.
type run struct {
	exit     int  // -1 when signalled
	killed   bool // ended by SIGKILL
	stderr   string
	duration time.Duration
	err      error
}

func (r run) String() string {
	if r.killed {
		return fmt.Sprintf("SIGKILLed after %s", r.duration.Round(time.Millisecond))
	}
	return fmt.Sprintf("exit %d after %s", r.exit, r.duration.Round(time.Millisecond))
}

// deleteAs runs the shim's `delete` exactly as containerd runs it (working
// directory the bundle, its arguments and environment, TTRPC_ADDRESS set,
// bounded by containerd's 5 s cleanup timeout), with failpoints fp ("" for
// none). killAfter > 0 sends a real SIGKILL that long after the start, as
// containerd's timeout, an operator or a crash would; < 0 sends none.
func deleteAs(c *harness.Container, fp string, killAfter time.Duration) run {
	ctx, cancel := context.WithTimeout(context.Background(), harness.ShimCleanupTimeout)
	defer cancel()
	cmd := c.DeleteCommand(ctx)
	if fp != "" {
		cmd.Env = append(cmd.Env, failpointsEnv+"="+fp)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return run{exit: -1, err: err}
	}
	if killAfter >= 0 {
		timer := time.AfterFunc(killAfter, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := cmd.Wait()
	r := run{exit: -1, stderr: errb.String(), duration: time.Since(start), err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.exit = 0
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			r.killed = true
		}
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("ran into containerd's %s cleanup timeout: %w", harness.ShimCleanupTimeout, ctx.Err())
	}
	return r
}

// checkAfter asserts what must hold once the task was deleted: nothing of
// the container left (the harness's full residue list, host data
// included), its shim gone, and the bystanders (claimants of the shim's
// command line, or plain processes) alive. It counts what went wrong in the
// figures.
func checkAfter(t *testing.T, c *harness.Container, bystanders ...harness.Proc) {
	t.Helper()
	ctx := context.Background()
	r := c.WaitClean(ctx, settle, false)
	lost := r.Of(harness.KindBindSource)
	if len(r) > 0 {
		t.Errorf("left behind (%s):\n%s", r.Summary(), r)
	}
	if c.Shim.Alive() {
		t.Errorf("shim %s still alive", c.Shim)
		r = append(r, harness.Leftover{Kind: "shim process", What: c.Shim.String()})
	}
	wrong := 0
	for _, p := range bystanders {
		if !p.Alive() {
			t.Errorf("process %s, outside the container and without proof, was SIGNALLED", p)
			wrong++
		}
	}
	figures.add(func(f *tally) {
		f.leftovers += len(r) - len(lost)
		f.lostData += len(lost)
		f.wronglySignalled += wrong
	})
}

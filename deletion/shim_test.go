package deletion

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// fakeShim starts a fake shim for testNS/id (testutil.FakeShim: its
// executable is a shim binary's). With sock set it holds, as fd 3, a unix
// socket listening there, silent (never accepting: hung) unless mode says
// it answers. Cleanup kills it.
func fakeShim(t *testing.T, id, sock string, mode testutil.FakeShimMode, extra ...string) *exec.Cmd {
	t.Helper()
	return testutil.FakeShim(t, testNS, id, sock, mode, extra...)
}

// impostor starts /bin/sh with a shim's command line for testNS/id,
// holding a unix socket listening at sock as fd 3: everything a shim shows
// but its executable. Cleanup kills it.
func impostor(t *testing.T, id, sock string) *exec.Cmd {
	t.Helper()
	f := testutil.ListenerFile(t, sock)
	defer f.Close()
	cmd := &exec.Cmd{Path: "/bin/sh", Args: []string{"containerd-shim-runc-v2", "-c", "sleep 1000 3>&-", "-namespace", testNS, "-id", id, "-address", "/run/x.sock"}}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline")
		if strings.HasPrefix(string(data), "containerd-shim-runc-v2\x00") {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("impostor %d: command line %q", cmd.Process.Pid, data)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exited reports whether cmd's process has exited (it is our child: a
// zombie until Wait).
func exited(cmd *exec.Cmd) bool { return !testutil.Alive(cmd.Process.Pid) }

func TestDeleteShim(t *testing.T) {
	testutil.NeedRoot(t)
	const (
		silent  = testutil.ShimSilent
		answers = testutil.ShimAnswers
	)
	for _, tc := range []struct {
		name     string
		policy   LiveShimPolicy
		mode     testutil.FakeShimMode
		stop     bool // SIGSTOP the shim first: hung
		claimant bool // a second process with the command line, no socket
		impostor bool // the shim is /bin/sh with a shim's command line and the socket
		// unlinked: the socket's file is removed, the shim still listens:
		// connect says dead, the shim process holding it says alive.
		unlinked bool
		wantKill bool
		// wantRefused: ErrShimAlive, the task directory untouched;
		// wantLeft: the delete finishes, the task directory is removed, the
		// shim and its socket are left.
		wantRefused, wantLeft bool
	}{
		{name: "containerd's delete kills a silent shim", policy: LeaveLiveShim, mode: silent, wantKill: true},
		{name: "containerd's delete kills a stopped shim", policy: LeaveLiveShim, mode: answers, stop: true, wantKill: true},
		{name: "containerd's delete never signals a shim that answers", policy: LeaveLiveShim, mode: answers, wantLeft: true},
		{name: "-force kills a shim that answers", policy: KillLiveShim, mode: answers, wantKill: true},
		{name: "a claimant without the socket is never signalled", policy: LeaveLiveShim, mode: silent, claimant: true, wantKill: true},
		{name: "an impostor with the socket is never signalled", policy: LeaveLiveShim, impostor: true},
		{name: "by hand a shim that answers is refused", policy: RefuseLiveShim, mode: answers, wantRefused: true},
		{name: "by hand a hung shim is refused", policy: RefuseLiveShim, mode: silent, wantRefused: true},
		{name: "by hand a shim holding its unlinked socket is refused", policy: RefuseLiveShim, mode: answers, unlinked: true, wantRefused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := testutil.RandID("shim")
			sock := filepath.Join(t.TempDir(), "s")
			var sh *exec.Cmd
			if tc.impostor {
				sh = impostor(t, id, sock)
			} else {
				sh = fakeShim(t, id, sock, tc.mode)
			}
			if tc.unlinked {
				if err := os.Remove(sock); err != nil {
					t.Fatal(err)
				}
			}
			if tc.stop {
				if err := syscall.Kill(sh.Process.Pid, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
			}
			var claimant *exec.Cmd
			if tc.claimant {
				claimant = fakeShim(t, id, "", silent)
			}
			bystander := testutil.StartSleeper(t)
			dir := testutil.TaskDir(t, id, map[string]string{"address": "unix://" + sock})

			start := time.Now()
			rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir, LiveShim: tc.policy})
			t.Logf("report (%s, err %v):\n%s", time.Since(start), err, rep.Text())
			switch {
			case tc.wantRefused:
				if !errors.Is(err, ErrShimAlive) {
					t.Fatalf("delete: err = %v, want ErrShimAlive", err)
				}
				if tc.unlinked && !strings.Contains(err.Error(), "holds the task's socket") {
					t.Errorf("delete: err = %v, want the shim process holding the socket named", err)
				}
				if _, err := os.Stat(filepath.Join(dir, "address")); err != nil {
					t.Errorf("a refused delete touched the task directory: %v", err)
				}
			case err != nil:
				t.Fatalf("delete: %v", err)
			}
			if got := exited(sh); got != tc.wantKill {
				t.Errorf("shim exited = %v, want %v", got, tc.wantKill)
			}
			if claimant != nil {
				if exited(claimant) {
					t.Errorf("claimant %d without the socket was signalled", claimant.Process.Pid)
				}
				if !strings.Contains(rep.Text(), "not signalled") {
					t.Errorf("claimant not reported:\n%s", rep.Text())
				}
			}
			if exited(bystander) {
				t.Errorf("bystander %d was signalled", bystander.Process.Pid)
			}
			var shimStep *StepReport
			for i := range rep.Steps {
				if rep.Steps[i].Step == StepShim {
					shimStep = &rep.Steps[i]
				}
			}
			did := ""
			if shimStep != nil {
				did = strings.Join(shimStep.Did, ";")
			}
			switch {
			case shimStep == nil:
				t.Errorf("no %q step in the report", StepShim)
			case tc.wantKill && (shimStep.Outcome == OutcomeFailed || !strings.Contains(did, "killed")):
				t.Errorf("shim step = %+v, want the shim killed", *shimStep)
			case tc.wantKill && shimStep.Duration > liveness.AskTimeout+shimWait:
				t.Errorf("shim step took %s, want at most the question's and the kill's bounds (%s + %s)", shimStep.Duration, liveness.AskTimeout, shimWait)
			case tc.wantLeft && !strings.Contains(did, "shim alive: left"):
				t.Errorf("shim step = %+v, want \"shim alive: left\"", *shimStep)
			}
			if tc.wantLeft {
				if _, err := os.Stat(sock); err != nil {
					t.Errorf("the live shim's socket was touched: %v", err)
				}
			}
			if !tc.wantRefused {
				testutil.AssertGone(t, dir)
			}
		})
	}
}

// TestDeleteShimUninterruptible: a shim that SIGKILL cannot end at once
// (in a frozen cgroup v1 freezer, or on a v2-only machine waiting for a
// FUSE answer that never comes, it sleeps uninterruptibly, state D, until
// released) is reported, and not waited for past shimWait.
func TestDeleteShimUninterruptible(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("dshim")
	sock := filepath.Join(t.TempDir(), "s")
	sh, thaw := uninterruptibleShim(t, id, sock) // dstate_test.go
	dir := testutil.TaskDir(t, id, map[string]string{"address": "unix://" + sock})

	start := time.Now()
	rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: id, Bundle: dir, LiveShim: LeaveLiveShim})
	took := time.Since(start)
	t.Logf("report (%s, err %v):\n%s", took, err, rep.Text())
	if took > liveness.AskTimeout+shimWait+500*time.Millisecond {
		t.Errorf("delete took %s: it waited for a shim stuck in D", took)
	}
	var step *StepReport
	for i := range rep.Steps {
		if rep.Steps[i].Step == StepShim {
			step = &rep.Steps[i]
		}
	}
	if step == nil || step.Outcome != OutcomeFailed || !strings.Contains(strings.Join(step.Problems, ";"), "uninterruptible sleep") {
		t.Errorf("shim step = %+v, want failed with the shim reported in uninterruptible sleep", step)
	}
	// Thawed, the SIGKILL it got takes effect.
	thaw()
	done := make(chan struct{})
	go func() { _ = sh.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("thawed shim %d did not die of the SIGKILL it was sent", sh.Process.Pid)
	}
}

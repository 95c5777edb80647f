package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// The live pod cases (issue 16, section 1): a pod whose sandbox ("pause")
// task ends while its workload still runs. On containerd 2.x the pod's
// containers are served by the sandbox's shim; containerd deletes the
// sandbox's task, closes its own connection to that shim, takes the closed
// connection for the shim's death and runs the shim binary's `delete` for
// the sandbox — with the shim alive and serving the workload. A delete that
// then kills the shim (or the sandbox's member containers) takes the
// running workload down. The workload here has its own PID namespace
// (NewPod's NamespaceOption pid CONTAINER, kubelet's default), so the
// pause process's death alone does not end it.
//
// A third case keeps the hung shim honest: a SIGSTOPped shim (alive,
// holding its socket, answering nothing) across a containerd restart must
// still be killed and the pod cleaned up — the fix for the live pod must
// not take "accepts a connection" for "alive".
const (
	casePauseKilled     = "5 pause killed while the workload runs"
	caseNotReadyRestart = "6 sandbox NOTREADY (pause killed), containerd restarted"
	caseHungShimRestart = "7 shim SIGSTOPped, containerd killed and restarted"
)

// Bounds of the live pod cases.
const (
	// hold is how long the workload must stay served once the evidence
	// that containerd ran its delete of the sandbox is in: containerd's
	// clean-up timeout (5 s) bounds that delete, and a killed shim takes
	// the workload down at once.
	hold = 5 * time.Second
	// execTimeout bounds each ExecSync.
	execTimeout = 10 * time.Second
)

// TestLivePod runs the live pod cases against each containerd, a daemon of
// its own per line and set-up (in parallel, like TestCRI), both handlers
// side by side; only `robust` is asserted. The outcomes join TestCRI's in
// tests/out/cri-side-by-side.md.
//
// Run them alone with, e.g.:
//
//	cd tests/cri && go test -count=1 -v -run 'TestLivePod/containerd-2.4' -timeout 20m .
func TestLivePod(t *testing.T) {
	for i, du := range daemons {
		t.Run(subtestName(du), func(t *testing.T) {
			results.daemon(i, titleOf(du), headingOf(du))
			t.Parallel()
			s := newSuite(t, du, fmt.Sprintf("%s/l%d", cgroupRoot, i))
			t.Run(casePauseKilled, func(t *testing.T) {
				for _, h := range handlers {
					t.Run(h, func(t *testing.T) { s.pauseKilled(t, h) })
				}
			})
			t.Run(caseNotReadyRestart, s.notReadyRestart)
			t.Run(caseHungShimRestart, s.hungShimRestart)
			t.Run("no task left on the daemon", s.noTaskLeft)
		})
	}
}

// pauseKilled (case 5): the pause process is SIGKILLed (pidfd, start time
// checked) while both containers run. Once CRI reports the sandbox
// NOTREADY and containerd has deleted the sandbox's task (its task
// directory is gone: containerd removes it after its own close of the
// shim's connection and the `delete` that close triggers), the workload
// must stay served for `hold`: the shim and every workload process alive,
// both containers RUNNING; ExecSync works in both; StopContainer ends each
// with 137 (the SIGKILL, as the shim reports it; 255 would be containerd's
// word for a lost shim); StopPodSandbox and RemovePodSandbox succeed and
// nothing is left.
func (s *suite) pauseKilled(t *testing.T, h string) {
	ctx := context.Background()
	p := s.startPod(t, h)
	logOff := s.d.LogSize()
	evidence, err := p.killPause(ctx)
	if err != nil {
		t.Fatalf("kill the pause process: %v", err)
	}
	served := p.watchServed(ctx, hold)
	execOK := p.execAll(ctx, t, asserted(h))
	var codes []string
	stopOK := true
	for i := range ContainerNames {
		code, err := p.stopContainer(ctx, i)
		switch {
		case err != nil:
			stopOK = false
			codes = append(codes, "error")
			if asserted(h) {
				t.Errorf("StopContainer %s: %v", ContainerNames[i], err)
			}
		default:
			codes = append(codes, fmt.Sprint(code))
			if code != exitKilled {
				stopOK = false
				if asserted(h) {
					t.Errorf("StopContainer %s: ContainerStatus reports exit code %d, want %d (SIGKILL as the shim reports it; 255: the shim was lost)",
						ContainerNames[i], code, exitKilled)
				}
			}
		}
	}
	stopErr, removeErr, r := teardown(p)
	unexpected, note := s.beyondIdleShim(p, r)
	exec := "ExecSync ok"
	if !execOK {
		exec = "ExecSync FAILED"
	}
	stop := "StopContainer exit " + strings.Join(codes, "/")
	if !stopOK {
		stop = "StopContainer exit " + strings.Join(codes, "/") + " (want 137)"
	}
	results.record(s.title, casePauseKilled, h, outcome(evidence+"; "+served.String()+"; "+exec+"; "+stop, stopErr, removeErr, r)+note)
	t.Logf("%s: %s; %s; %s; %s; %s%s", h, evidence, served, exec, stop, Summary(r), note)
	if !asserted(h) {
		return
	}
	if !served.ok() {
		t.Errorf("the pod's workload was not served after its pause process died and containerd deleted the sandbox's task: %s\n"+
			"(containerd 2.x runs the shim's `delete` for the sandbox while the shim serves the pod: the delete must leave a shim that answers alone)\n"+
			"--- containerd log since the kill ---\n%s", served, s.d.LogSince(logOff))
	}
	if stopErr != nil {
		t.Errorf("StopPodSandbox: %v", stopErr)
	}
	if removeErr != nil {
		t.Errorf("RemovePodSandbox: %v", removeErr)
	}
	if len(unexpected) > 0 {
		t.Errorf("left behind:\n%s", unexpected)
	}
}

// notReadyRestart (case 6): in one pod per handler the pause process is
// SIGKILLed; once each sandbox is NOTREADY and its task deleted, containerd
// is restarted (SIGTERM, as containerd's own TestContainerdRestart does).
// After the restart each workload must still be served for `hold` — both
// containers RUNNING, the shim and every workload process the same (pid and
// start time) —, ExecSync must work, and StopPodSandbox and
// RemovePodSandbox must succeed and leave nothing.
func (s *suite) notReadyRestart(t *testing.T) {
	ctx := context.Background()
	pods := map[string]*Pod{}
	for _, h := range handlers {
		pods[h] = s.startPod(t, h)
	}
	// Registered last, so it runs first: the pods' cleanups need the daemon.
	t.Cleanup(func() { s.ensureRunning(t) })
	evidence := map[string]string{}
	before := map[string]served{}
	for _, h := range handlers {
		ev, err := pods[h].killPause(ctx)
		if err != nil {
			t.Fatalf("%s: kill the pause process: %v", h, err)
		}
		evidence[h] = ev
	}
	for _, h := range handlers {
		before[h] = pods[h].watchServed(ctx, 0)
	}
	logOff := s.d.LogSize()
	if err := s.d.Stop(); err != nil {
		t.Fatalf("stop containerd: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, StartTimeout+10*time.Second)
	defer cancel()
	if err := s.d.Start(sctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	for _, h := range handlers {
		t.Run(h, func(t *testing.T) {
			p := pods[h]
			after := p.watchServed(ctx, hold)
			execOK := p.execAll(ctx, t, asserted(h))
			stopErr, removeErr, r := teardown(p)
			unexpected, note := s.beyondIdleShim(p, r)
			exec := "ExecSync ok"
			if !execOK {
				exec = "ExecSync FAILED"
			}
			cell := fmt.Sprintf("%s; before the restart: %s; after: %s; %s", evidence[h], before[h].brief(), after, exec)
			results.record(s.title, caseNotReadyRestart, h, outcome(cell, stopErr, removeErr, r)+note)
			t.Logf("%s: %s; %s%s", h, cell, Summary(r), note)
			if !asserted(h) {
				return
			}
			if !before[h].ok() {
				t.Errorf("before the restart, the workload of the NOTREADY sandbox was not served: %s", before[h])
			}
			if !after.ok() {
				t.Errorf("after the restart, the workload of the NOTREADY sandbox was not served: %s\n--- containerd log since the restart ---\n%s",
					after, s.d.LogSince(logOff))
			}
			if stopErr != nil {
				t.Errorf("StopPodSandbox: %v", stopErr)
			}
			if removeErr != nil {
				t.Errorf("RemovePodSandbox: %v", removeErr)
			}
			if len(unexpected) > 0 {
				t.Errorf("left behind:\n%s", unexpected)
			}
		})
	}
}

// hungShimRestart (case 7): each pod's shim is SIGSTOPped (hung: alive,
// holding its socket, answering nothing), containerd is SIGKILLed and
// restarted. containerd finds the shim unresponsive and runs `delete` for
// the pod's tasks: with ours the hung shim must be killed, CRI must report
// the pod down, StopPodSandbox and RemovePodSandbox must succeed and
// nothing may be left. (While containerd runs, a stopped shim is never
// declared dead — calls to it just time out — so no `delete` runs and
// there is nothing for a shim binary to clean up; the restart is what
// brings the delete.)
func (s *suite) hungShimRestart(t *testing.T) {
	ctx := context.Background()
	pods := map[string]*Pod{}
	for _, h := range handlers {
		pods[h] = s.startPod(t, h)
	}
	t.Cleanup(func() { s.ensureRunning(t) })
	if err := s.d.Kill(); err != nil {
		t.Fatalf("kill containerd: %v", err)
	}
	for _, h := range handlers {
		if err := pods[h].stopShims(); err != nil {
			t.Fatalf("%s: %v", h, err)
		}
	}
	logOff := s.d.LogSize()
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, StartTimeout+10*time.Second)
	defer cancel()
	if err := s.d.Start(sctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	s.downAfterRestart(t, ctx, caseHungShimRestart, pods, time.Since(start), logOff, " (the hung shim must be killed by the delete containerd runs at its restart)")
}

// idleShimOutlivesPod reports whether containerd of that version leaves the
// pod's shim running (idle, serving no task) after the pod's removal when
// the sandbox's task was deleted while the pod's containers ran: 2.x before
// 2.4. Read in 2.3.7: core/runtime/v2/task_manager.go deletes a task with
// sandboxed = (container.SandboxID != ""), true for every CRI container, and
// shimTask.delete (shim.go) then skips waitShutdown on a task API v3 shim
// ("Let controller decide when to shutdown"); the only delete that asks the
// shim to shut down is the sandbox's, which here came while the containers
// ran, so the shim declined. Nothing runs the shim binary's `delete` after
// that (the containers' on-close callback is empty before 2.4). 2.4 (read in
// 2.4.2) calls waitShutdown after every task's delete. Upstream's shim is
// left the same way: it is the process serving the pod whichever handler.
func idleShimOutlivesPod(version string) bool {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major == 2 && minor < 4
}

// beyondIdleShim is r without the pod's own shim and socket where the
// daemon's containerd leaves that shim running (idleShimOutlivesPod), with
// a note for the result when it did; elsewhere r itself.
func (s *suite) beyondIdleShim(p *Pod, r harness.Residue) (harness.Residue, string) {
	if !idleShimOutlivesPod(s.d.Version) {
		return r, ""
	}
	ours := map[string]bool{}
	for _, sh := range p.Shims {
		ours[KindShim+"\x00"+sh.String()] = true
	}
	for _, sock := range p.ShimSocket {
		ours[harness.KindSocket+"\x00"+sock] = true
	}
	var rest harness.Residue
	for _, l := range r {
		if !ours[l.Kind+"\x00"+l.What] {
			rest = append(rest, l)
		}
	}
	if len(rest) == len(r) {
		return r, ""
	}
	return rest, " (containerd " + s.d.Version + " never shuts that idle shim down: not asserted)"
}

// ensureRunning restarts the suite's daemon when a case left it down.
func (s *suite) ensureRunning(t *testing.T) {
	if s.d.Running() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout+10*time.Second)
	defer cancel()
	if err := s.d.Start(ctx); err != nil {
		t.Errorf("restart containerd for cleanup: %v", err)
	}
}

// killPause SIGKILLs the pod's sandbox ("pause") process, verified by its
// start time through a pidfd, and waits (bounded) for the evidence that
// containerd handled its exit: CRI reports the sandbox NOTREADY, then the
// sandbox's task directory is gone (containerd removes it only after it
// deleted the task, closed its connection to the shim and ran the shim's
// `delete` for the sandbox, which that close triggers). The first is
// required; the second is reported (a line that keeps the directory says
// so in the result). It returns a description of what was seen.
func (p *Pod) killPause(ctx context.Context) (string, error) {
	pause := p.Tasks[0].Init
	if err := pause.Kill(); err != nil {
		return "", err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if left := harness.WaitGone(wctx, []harness.Proc{pause}); len(left) > 0 {
		return "", fmt.Errorf("pause %s alive 10 s after SIGKILL", pause)
	}
	start := time.Now()
	var (
		sb      runtimeapi.PodSandboxState
		lastErr error
	)
	if !harness.Poll(downTimeout, 50*time.Millisecond, func() bool {
		var st States
		st, lastErr = p.States(ctx)
		sb = st.Sandbox
		return lastErr == nil && sb == runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	}) {
		return "", fmt.Errorf("sandbox %s after %s, want NOTREADY (last error: %v)", sb, downTimeout, lastErr)
	}
	notReady := time.Since(start)
	gone := harness.Poll(downTimeout, 50*time.Millisecond, func() bool {
		_, err := os.Lstat(p.Tasks[0].Bundle)
		return errors.Is(err, os.ErrNotExist)
	})
	if !gone {
		return fmt.Sprintf("sandbox NOTREADY in %.1f s, its task dir KEPT %s later", notReady.Seconds(), downTimeout), nil
	}
	return fmt.Sprintf("sandbox NOTREADY in %.1f s, its task deleted in %.1f s", notReady.Seconds(), time.Since(start).Seconds()), nil
}

// served is what watchServed saw of a pod's workload.
type served struct {
	held    time.Duration // how long it was watched
	failAt  time.Duration // when the first failure was seen
	failure string        // "" when it stayed served
}

func (s served) ok() bool { return s.failure == "" }

func (s served) String() string {
	if s.ok() {
		return fmt.Sprintf("served for %.0f s (shim and workload alive, containers RUNNING)", s.held.Seconds())
	}
	return fmt.Sprintf("NOT SERVED after %.1f s: %s", s.failAt.Seconds(), s.failure)
}

// brief is String for a single look.
func (s served) brief() string {
	if s.ok() {
		return "served"
	}
	return "NOT SERVED: " + s.failure
}

// workload is every recorded process of the pod but the sandbox's.
func (p *Pod) workload() []harness.Proc {
	var ws []harness.Proc
	for _, pr := range p.Procs {
		if pr.Pid != p.Tasks[0].Init.Pid {
			ws = append(ws, pr)
		}
	}
	return ws
}

// watchServed watches the pod's workload for d (at least one look): the
// shim alive, every recorded workload process alive (pid and start time),
// and CRI reporting both containers RUNNING. It stops at the first
// failure.
func (p *Pod) watchServed(ctx context.Context, d time.Duration) served {
	start := time.Now()
	for {
		if f := p.servedNow(ctx); f != "" {
			return served{held: time.Since(start), failAt: time.Since(start), failure: f}
		}
		if time.Since(start) >= d {
			return served{held: time.Since(start)}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *Pod) servedNow(ctx context.Context) string {
	var fails []string
	for _, sh := range p.Shims {
		if !sh.Alive() {
			fails = append(fails, "shim "+sh.String()+" gone")
		}
	}
	var dead []string
	for _, pr := range p.workload() {
		if !pr.Alive() {
			dead = append(dead, pr.String())
		}
	}
	if len(dead) > 0 {
		fails = append(fails, "workload processes gone: "+strings.Join(dead, " "))
	}
	st, err := p.States(ctx)
	if err != nil {
		fails = append(fails, err.Error())
	} else {
		for i, c := range st.Containers {
			if c != runtimeapi.ContainerState_CONTAINER_RUNNING {
				fails = append(fails, fmt.Sprintf("%s %s", ContainerNames[i], strings.TrimPrefix(c.String(), "CONTAINER_")))
				if c == runtimeapi.ContainerState_CONTAINER_EXITED {
					fails[len(fails)-1] += fmt.Sprintf("(%d %s)", st.ExitCodes[i], st.Reasons[i])
				}
			}
		}
	}
	return strings.Join(fails, ", ")
}

// execAll runs a command in each container through ExecSync and checks
// its output; failures are errors of t when assert is set. It reports
// whether every exec worked.
func (p *Pod) execAll(ctx context.Context, t *testing.T, assert bool) bool {
	ok := true
	for i, name := range ContainerNames {
		out, errOut, code, err := p.ExecSync(ctx, i, []string{"/bin/sh", "-c", "echo exec-ok $((6*7))"}, execTimeout)
		if err != nil || code != 0 || out != "exec-ok 42\n" {
			ok = false
			if assert {
				t.Errorf("ExecSync in %s: stdout %q stderr %q exit %d err %v; want \"exec-ok 42\\n\", exit 0", name, out, errOut, code, err)
			}
		}
	}
	return ok
}

// stopContainer calls StopContainer with no grace period (SIGKILL at once,
// as kubelet does after the grace period) on container i and returns the
// exit code CRI then reports for it (ContainerStatus).
func (p *Pod) stopContainer(ctx context.Context, i int) (int32, error) {
	rt, err := p.runtime()
	if err != nil {
		return 0, err
	}
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	if _, err := rt.StopContainer(cctx, &runtimeapi.StopContainerRequest{ContainerId: p.ContainerIDs[i], Timeout: 0}); err != nil {
		return 0, err
	}
	cs, err := rt.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: p.ContainerIDs[i]})
	if err != nil {
		return 0, fmt.Errorf("ContainerStatus: %w", err)
	}
	if st := cs.GetStatus().GetState(); st != runtimeapi.ContainerState_CONTAINER_EXITED {
		return 0, fmt.Errorf("state %s after StopContainer, want EXITED", st)
	}
	return cs.GetStatus().GetExitCode(), nil
}

// stopShims SIGSTOPs the pod's shims (pidfd, start time checked) and waits
// (bounded) until each is stopped.
func (p *Pod) stopShims() error {
	for _, sh := range p.Shims {
		if err := signalVerified(sh, unix.SIGSTOP); err != nil {
			return err
		}
		if !harness.Poll(2*time.Second, 5*time.Millisecond, func() bool { return procState(sh.Pid) == 'T' }) {
			return fmt.Errorf("shim %s not stopped 2 s after SIGSTOP (state %c)", sh, procState(sh.Pid))
		}
	}
	return nil
}

// signalVerified sends sig to the recorded process through a pidfd opened
// before its start time is checked, so that a reused pid is never
// signalled.
func signalVerified(pr harness.Proc, sig syscall.Signal) error {
	fd, err := unix.PidfdOpen(pr.Pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %s: %w", pr, err)
	}
	defer unix.Close(fd)
	if !pr.Alive() {
		return fmt.Errorf("%s is gone", pr)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		return fmt.Errorf("signal %s: %w", pr, err)
	}
	return nil
}

// procState is field 3 of /proc/<pid>/stat, 0 when unreadable.
func procState(pid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}

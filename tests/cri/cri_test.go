package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Bounds of the asynchronous outcomes.
const (
	// downTimeout bounds how long after a shim's death CRI may take to
	// report the pod down. containerd runs each task's `delete` with a 5 s
	// timeout; ours takes well under a second.
	downTimeout = 10 * time.Second
	// settle bounds how long after RemovePodSandbox the residue may take to
	// disappear (the shim exits after its last task is deleted).
	settle = 5 * time.Second
)

// exitKilled is the exit status a delete reports for a container it
// killed (128 + SIGKILL); containerd reports 255 when the delete failed.
const exitKilled = 137

// handlers are the two columns; only robust is asserted.
var handlers = []string{HandlerRunc, HandlerRobust}

// TestCRI runs every case against each containerd, one after the other.
func TestCRI(t *testing.T) {
	for _, du := range daemons {
		t.Run("containerd-"+du.version, func(t *testing.T) { runSuite(t, du) })
	}
}

// suite is one daemon under test and its run's bookkeeping.
type suite struct {
	d     *Daemon
	title string
	pods  int
}

func runSuite(t *testing.T, du daemonUnderTest) {
	d, err := NewDaemon(DaemonConfig{
		Binary: du.binary,
		Shims: map[string]string{
			ShimRobustBinary:   shimRobust,
			ShimUpstreamBinary: shimUpstream,
		},
		SandboxImage: ImageRef,
	})
	if err != nil {
		t.Fatalf("new daemon %s: %v", du.binary, err)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- containerd log (tail) ---\n%s", d.LogTail(60))
		}
		if err := d.Close(); err != nil {
			t.Errorf("close daemon: %v", err)
		}
	})
	sctx, cancel := context.WithTimeout(ctx, StartTimeout+10*time.Second)
	defer cancel()
	if err := d.Start(sctx); err != nil {
		t.Fatalf("start containerd %s with the CRI plugin: %v", du.binary, err)
	}
	if err := d.ImportImage(sctx, imageArchive, ImageRef); err != nil {
		t.Fatalf("image: %v", err)
	}
	s := &suite{d: d, title: d.Version}
	results.daemon(s.title, d.Setup.String())
	t.Logf("containerd %s (%s), dir %s; handler %q:\n%s", d.Version, du.binary, d.Dir, HandlerRobust,
		HandlerConfig(d.Setup, HandlerRobust, d.ShimPath(ShimRobustBinary)))

	t.Run("1 normal lifecycle", func(t *testing.T) {
		for _, h := range handlers {
			t.Run(h, func(t *testing.T) { s.lifecycle(t, h) })
		}
	})
	t.Run("2 shim SIGKILL", func(t *testing.T) {
		for _, h := range handlers {
			t.Run(h, func(t *testing.T) { s.shimKilled(t, h, false) })
		}
	})
	t.Run("3 runtime file removed, shim SIGKILL", func(t *testing.T) {
		for _, h := range handlers {
			t.Run(h, func(t *testing.T) { s.shimKilled(t, h, true) })
		}
	})
	t.Run("4 containerd killed, shim SIGKILL, containerd restarted", func(t *testing.T) {
		s.restarted(t)
	})
	t.Run("no task left on the daemon", func(t *testing.T) {
		for _, base := range []string{d.State, d.Root} {
			dir := filepath.Join(base, "io.containerd.runtime.v2.task", Namespace)
			if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("%s still holds %v after every case cleaned up", dir, names)
			}
		}
	})
}

// asserted is true for the handler whose outcome the test asserts.
func asserted(h string) bool { return h == HandlerRobust }

// shimBinary is the binary the handler's pods must run.
func shimBinary(h string) string {
	if h == HandlerRobust {
		return ShimRobustBinary
	}
	return ShimUpstreamBinary
}

// startPod runs a pod under handler h, registers its Cleanup (pass or fail)
// and checks it is up and served by the handler's shim binary: one shim
// for the pod's three tasks.
func (s *suite) startPod(t *testing.T, h string) *Pod {
	t.Helper()
	s.pods++
	name := fmt.Sprintf("p%d-%s", s.pods, h)
	p := s.d.NewPod(PodConfig{Name: name, Handler: h, CgroupParent: cgroupRoot + "/pod-" + name})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := p.Cleanup(ctx); err != nil {
			t.Errorf("cleanup of pod %s: %v", name, err)
		}
	})
	ctx := context.Background()
	if err := p.Run(ctx); err != nil {
		t.Fatalf("run pod under handler %s: %v", h, err)
	}
	st, err := p.States(ctx)
	if err != nil || !st.Up() {
		t.Fatalf("pod %s not up after start: %s (%v)", name, st, err)
	}
	if len(p.Shims) != 1 {
		t.Errorf("pod %s: %d shims %v for its 3 tasks, want 1", name, len(p.Shims), p.Shims)
	}
	want := s.d.ShimPath(shimBinary(h))
	for _, exe := range p.ShimExes {
		if exe != want {
			t.Fatalf("pod %s under handler %s runs shim %s, want %s", name, h, exe, want)
		}
	}
	return p
}

// teardown is what kubelet does for a dead pod: StopPodSandbox then
// RemovePodSandbox; then the residue, polled until clean (bounded by
// settle). Errors are returned, not asserted.
func teardown(p *Pod) (stopErr, removeErr error, r harness.Residue) {
	ctx := context.Background()
	stopErr = p.Stop(ctx)
	removeErr = p.Remove(ctx)
	return stopErr, removeErr, p.WaitClean(ctx, settle)
}

// outcome formats one cell of the side-by-side table.
func outcome(down string, stopErr, removeErr error, r harness.Residue) string {
	var parts []string
	if down != "" {
		parts = append(parts, down)
	}
	if stopErr != nil {
		parts = append(parts, "StopPodSandbox failed")
	}
	if removeErr != nil {
		parts = append(parts, "RemovePodSandbox failed")
	}
	parts = append(parts, Summary(r))
	return strings.Join(parts, "; ")
}

// exitCodes is the containers' exit codes as CRI reports them.
func exitCodes(st States) string {
	codes := make([]string, len(st.ExitCodes))
	for i, c := range st.ExitCodes {
		codes[i] = fmt.Sprint(c)
	}
	return "exit " + strings.Join(codes, "/")
}

// lifecycle (case 1): the pod runs, ExecSync works in both containers and
// relays exit codes, StopPodSandbox stops it, RemovePodSandbox leaves
// nothing.
func (s *suite) lifecycle(t *testing.T, h string) {
	ctx := context.Background()
	p := s.startPod(t, h)
	info, err := p.SandboxInfo(ctx)
	if err != nil {
		t.Errorf("verbose PodSandboxStatus: %v", err)
	} else {
		wantType := "io.containerd.runc.v2"
		if h == HandlerRobust && s.d.Setup == SetupRuntimeType {
			wantType = "io.containerd.runc.v2-robust"
		}
		if info["runtimeHandler"] != h || info["runtimeType"] != wantType {
			t.Errorf("CRI reports runtime handler %v, type %v; want %s, %s", info["runtimeHandler"], info["runtimeType"], h, wantType)
		}
	}
	execOK := true
	for i, name := range ContainerNames {
		out, errOut, code, err := p.ExecSync(ctx, i, []string{"/bin/sh", "-c", "echo exec-ok $((6*7)) in $0"}, 10*time.Second)
		if err != nil || code != 0 || out != "exec-ok 42 in /bin/sh\n" {
			execOK = false
			t.Errorf("ExecSync in %s: stdout %q stderr %q exit %d err %v; want \"exec-ok 42 in /bin/sh\\n\", exit 0", name, out, errOut, code, err)
		}
		if _, _, code, err := p.ExecSync(ctx, i, []string{"/bin/sh", "-c", "exit 3"}, 10*time.Second); err != nil || code != 3 {
			execOK = false
			t.Errorf("ExecSync `exit 3` in %s: exit %d err %v; want exit 3", name, code, err)
		}
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	st, err := p.States(ctx)
	if err != nil || !st.Down() {
		t.Errorf("after StopPodSandbox: %s (%v); want sandbox NOTREADY, containers EXITED", st, err)
	}
	removeErr := p.Remove(ctx)
	if removeErr != nil {
		t.Errorf("RemovePodSandbox: %v", removeErr)
	}
	r := p.WaitClean(ctx, settle)
	if len(r) > 0 {
		t.Errorf("left behind after RemovePodSandbox:\n%s", r)
	}
	exec := "ExecSync ok"
	if !execOK {
		exec = "ExecSync FAILED"
	}
	results.record(s.title, "1 normal lifecycle", h, outcome(exec+"; stopped, "+exitCodes(st), nil, removeErr, r))
}

// shimKilled (cases 2 and 3): the pod's shim is SIGKILLed while containerd
// runs (case 3: after the `runtime` file was removed from every task
// directory of the pod). CRI must report the pod down within downTimeout;
// StopPodSandbox and RemovePodSandbox must succeed and leave nothing. Only
// the robust handler is asserted; for runc the outcome is recorded, and in
// case 3 it must show the leak (else the fault or the residue check is
// broken).
func (s *suite) shimKilled(t *testing.T, h string, removeRuntime bool) {
	caseName := "2 shim SIGKILL"
	if removeRuntime {
		caseName = "3 `runtime` file removed, shim SIGKILL"
	}
	ctx := context.Background()
	p := s.startPod(t, h)
	if removeRuntime {
		if err := p.RemoveTaskFile(harness.RuntimeFile); err != nil {
			t.Fatalf("remove runtime file: %v", err)
		}
	}
	logOff := s.d.LogSize()
	if err := p.KillShims(); err != nil {
		t.Fatalf("kill shim: %v", err)
	}
	st, took, downErr := p.WaitDown(ctx, downTimeout)
	down := fmt.Sprintf("down in %.1f s, %s", took.Seconds(), exitCodes(st))
	if downErr != nil {
		down = "NOT DOWN: " + downErr.Error()
	}
	stopErr, removeErr, r := teardown(p)
	deletes, deletesOK := s.deleteStatuses(p)
	results.record(s.title, caseName, h, outcome(down+"; "+deletes, stopErr, removeErr, r))
	t.Logf("%s: %s; %s; %s", h, down, deletes, Summary(r))

	if !asserted(h) {
		if removeRuntime {
			results.detail(s.title, fmt.Sprintf("What `runc` (upstream's shim) left behind in case %q:\n\n```\n%s\n```", caseName, r))
			if len(r) == 0 {
				t.Errorf("upstream's shim left nothing with its `runtime` file removed: the fault did not bite, or the residue check is blind")
			}
		}
		return
	}
	if downErr != nil {
		t.Errorf("after the shim's SIGKILL: %v", downErr)
	}
	if !deletesOK {
		t.Errorf("containerd's TaskExit after the shim's death: %s; want %d for every task (the delete's report of its kill; 255 means the delete failed)", deletes, exitKilled)
	}
	if stopErr != nil {
		t.Errorf("StopPodSandbox: %v", stopErr)
	}
	if removeErr != nil {
		t.Errorf("RemovePodSandbox: %v", removeErr)
	}
	if len(r) > 0 {
		t.Errorf("left behind:\n%s\n--- containerd log since the kill ---\n%s", r, s.d.LogSince(logOff))
	}
}

// deleteStatuses waits (bounded) for the TaskExit containerd publishes for
// each task of the pod after its shim died, carrying the status the shim's
// `delete` reported (255 when the delete failed). It is called after the
// teardown, so that kubelet's calls race the deletes as they do in
// production. ok is true when every task's status is exitKilled.
func (s *suite) deleteStatuses(p *Pod) (summary string, ok bool) {
	ok = true
	var parts []string
	for _, t := range p.Tasks {
		ev, seen := s.d.WaitExit(t.ID, downTimeout)
		switch {
		case !seen:
			ok = false
			parts = append(parts, "none")
		default:
			ok = ok && ev.ExitStatus == exitKilled
			parts = append(parts, fmt.Sprint(ev.ExitStatus))
		}
	}
	return "delete's TaskExit " + strings.Join(parts, "/"), ok
}

// restarted (case 4): containerd is SIGKILLed, the pods' shims are
// SIGKILLed while it is down, containerd is restarted: the pods must be
// reported down, be removable and leave nothing. One pod per handler, in
// the same restart.
func (s *suite) restarted(t *testing.T) {
	const caseName = "4 containerd killed, shim SIGKILL, containerd restarted"
	ctx := context.Background()
	pods := map[string]*Pod{}
	for _, h := range handlers {
		pods[h] = s.startPod(t, h)
	}
	// Registered last, so it runs first: the pods' cleanups need the daemon.
	t.Cleanup(func() {
		if !s.d.Running() {
			if err := s.d.Start(context.Background()); err != nil {
				t.Errorf("restart containerd for cleanup: %v", err)
			}
		}
	})
	if err := s.d.Kill(); err != nil {
		t.Fatalf("kill containerd: %v", err)
	}
	for _, h := range handlers {
		if err := pods[h].KillShims(); err != nil {
			t.Fatalf("kill %s shim: %v", h, err)
		}
	}
	logOff := s.d.LogSize()
	start := time.Now()
	if err := s.d.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	restartTook := time.Since(start)
	for _, h := range handlers {
		t.Run(h, func(t *testing.T) {
			p := pods[h]
			st, took, downErr := p.WaitDown(ctx, downTimeout)
			down := fmt.Sprintf("down %.1f s after restart, %s", (restartTook + took).Seconds(), exitCodes(st))
			if downErr != nil {
				down = "NOT DOWN: " + downErr.Error()
			}
			stopErr, removeErr, r := teardown(p)
			results.record(s.title, caseName, h, outcome(down, stopErr, removeErr, r))
			t.Logf("%s: %s; %s", h, down, Summary(r))
			if !asserted(h) {
				return
			}
			if downErr != nil {
				t.Errorf("after the restart: %v", downErr)
			}
			if stopErr != nil {
				t.Errorf("StopPodSandbox: %v", stopErr)
			}
			if removeErr != nil {
				t.Errorf("RemovePodSandbox: %v", removeErr)
			}
			if len(r) > 0 {
				t.Errorf("left behind:\n%s\n--- containerd log since the restart ---\n%s", r, s.d.LogSince(logOff))
			}
		})
	}
}

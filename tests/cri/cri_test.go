package cri

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
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

// TestCRI runs every case against each containerd: the daemons run in
// parallel (as many at a time as `go test -parallel`, GOMAXPROCS by
// default), as everything of each is private; within a daemon the cases
// run one after the other. The side-by-side output keeps the daemons'
// order.
func TestCRI(t *testing.T) {
	for i, du := range daemons {
		t.Run(subtestName(du), func(t *testing.T) {
			results.daemon(i, titleOf(du), headingOf(du))
			t.Parallel()
			runSuite(t, du, fmt.Sprintf("%s/d%d", cgroupRoot, i))
		})
	}
}

// subtestName is a daemon run's subtest: containerd-<version>, and the
// set-up where the version has more than one.
func subtestName(du daemonUnderTest) string {
	name := "containerd-" + du.version
	if len(setupsOf(du.version)) > 1 {
		name += "/" + strings.ReplaceAll(du.setup.String(), " ", "-")
	}
	return name
}

// titleOf is a daemon run's key and column in the side-by-side output.
func titleOf(du daemonUnderTest) string { return du.version + ", " + du.setup.String() }

// headingOf is its section heading there.
func headingOf(du daemonUnderTest) string {
	cv, _ := ConfigVersionFor(du.version)
	return fmt.Sprintf("containerd %s (line %s, config version %d) — handler `robust` set up by %s", du.version, du.line, cv, du.setup)
}

// suite is one daemon under test and its run's bookkeeping.
type suite struct {
	d     *Daemon
	title string
	pods  int
	// cgroupParent is the parent of this daemon's pods' cgroups (pod
	// names are unique per daemon only).
	cgroupParent string
}

// setupsOf is how many set-ups the suite runs on a version (for the
// subtests' names).
func setupsOf(version string) []Setup {
	setups, _ := setupsFor(version)
	return setups
}

func runSuite(t *testing.T, du daemonUnderTest, cgroupParent string) {
	s := newSuite(t, du, cgroupParent)

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
	t.Run("no task left on the daemon", s.noTaskLeft)
}

// newSuite starts a daemon of du for a suite (closed at the end of t) with
// the test image imported.
func newSuite(t *testing.T, du daemonUnderTest, cgroupParent string) *suite {
	setup := du.setup
	// Our shim and that line's upstream shim side by side in the daemon's
	// bin directory: upstream's serves the `runc` handler and is the
	// delegate ours finds next to itself.
	d, err := NewDaemon(DaemonConfig{
		Binary: du.binary,
		Shims: map[string]string{
			ShimRobustBinary:   shimRobust,
			ShimUpstreamBinary: du.upstream,
		},
		SandboxImage: ImageRef,
		Setup:        &setup,
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
	s := &suite{d: d, title: titleOf(du), cgroupParent: cgroupParent}
	t.Logf("containerd %s (%s, upstream shim %s), dir %s; config version %d; handler %q:\n%s", d.Version, du.binary,
		du.upstream, d.Dir, d.ConfigVersion, HandlerRobust,
		HandlerConfig(d.ConfigVersion, d.Setup, HandlerRobust, d.ShimPath(ShimRobustBinary)))
	return s
}

// noTaskLeft checks, after every case of a suite cleaned up, that the
// daemon holds no task directory.
func (s *suite) noTaskLeft(t *testing.T) {
	for _, base := range []string{s.d.State, s.d.Root} {
		dir := filepath.Join(base, "io.containerd.runtime.v2.task", Namespace)
		if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("%s still holds %v after every case cleaned up", dir, names)
		}
	}
}

// asserted is true for the handler whose outcome the test asserts.
func asserted(h string) bool { return h == HandlerRobust }

// startedBinary is the shim binary containerd runs for the handler's
// pods; the process serving them is upstream's shim either way (ours
// execs it).
func startedBinary(h string) string {
	if h == HandlerRobust {
		return ShimRobustBinary
	}
	return ShimUpstreamBinary
}

// startPod runs a pod under handler h, registers its Cleanup (pass or fail)
// and checks it is up and served by one shim for its three tasks; that
// containerd started the handler's binary (ours for `robust`); and that
// the process serving the pod is upstream's binary of the daemon's line installed in the
// daemon's bin directory — for `robust` too: ours, started by containerd,
// execs upstream's shim found next to itself (the delegate), so the
// process's /proc/<pid>/exe is the delegate, never our binary.
func (s *suite) startPod(t *testing.T, h string) *Pod {
	t.Helper()
	s.pods++
	name := fmt.Sprintf("p%d-%s", s.pods, h)
	p := s.d.NewPod(PodConfig{Name: name, Handler: h, CgroupParent: s.cgroupParent + "/pod-" + name})
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
	// containerd records the binary it started for the pod in the
	// sandbox's task directory (every line writes it for the task that
	// starts the shim).
	started, err := os.ReadFile(filepath.Join(p.Tasks[0].Bundle, bundle.ShimBinaryPathFile))
	if got, want := strings.TrimSpace(string(started)), s.d.ShimPath(startedBinary(h)); err != nil || got != want {
		t.Fatalf("pod %s under handler %s: containerd started shim %q (%s, %v), want %s",
			name, h, got, bundle.ShimBinaryPathFile, err, want)
	}
	want := s.d.ShimPath(ShimUpstreamBinary)
	for _, exe := range p.ShimExes {
		if exe != want {
			t.Fatalf("pod %s under handler %s is served by %s, want the delegate %s (upstream's shim next to %s)",
				name, h, exe, want, s.d.ShimPath(startedBinary(h)))
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
		if handler := runtimeHandler(info); handler != h || info["runtimeType"] != wantType {
			t.Errorf("CRI reports runtime handler %v, type %v; want %s, %s", handler, info["runtimeType"], h, wantType)
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

// runtimeHandler is the runtime handler in a verbose PodSandboxStatus
// info: "runtimeHandler" on 1.x, the sandbox metadata's RuntimeHandler on
// 2.x.
func runtimeHandler(info map[string]any) any {
	if h, ok := info["runtimeHandler"]; ok {
		return h
	}
	if sm, ok := info["sandboxMetadata"].(map[string]any); ok {
		if m, ok := sm["Metadata"].(map[string]any); ok {
			return m["RuntimeHandler"]
		}
	}
	return nil
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
		want := "for every task"
		if containerRunsNoDelete(s.d.Version) {
			want = "for the sandbox (containerd " + s.d.Version + " runs no delete for the containers)"
		}
		t.Errorf("containerd's TaskExit after the shim's death: %s; want %d %s (the delete's report of its kill; "+
			"255 means the delete failed, none that containerd ran no delete for the task)", deletes, exitKilled, want)
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
// production. ok is true when every task's status is exitKilled — or,
// on a containerd that runs no delete for the containers of a pod whose
// shim died (containerRunsNoDelete), when the sandbox's is and the
// containers have none.
func (s *suite) deleteStatuses(p *Pod) (summary string, ok bool) {
	ok = true
	var parts []string
	deadline := time.Now().Add(downTimeout) // one bound for all the pod's tasks
	for i, t := range p.Tasks {
		ev, seen := s.d.WaitExit(t.ID, max(time.Until(deadline), time.Millisecond))
		switch {
		case !seen:
			ok = ok && i > 0 && containerRunsNoDelete(s.d.Version)
			parts = append(parts, "none")
		default:
			ok = ok && ev.ExitStatus == exitKilled
			parts = append(parts, fmt.Sprint(ev.ExitStatus))
		}
	}
	return "delete's TaskExit " + strings.Join(parts, "/"), ok
}

// containerRunsNoDelete reports whether containerd of that version runs no
// `delete` (and so publishes no TaskExit) for the containers of a pod whose
// shim died while it ran: 2.x before 2.4 loads a container that joins its
// sandbox's shim with no clean-up on disconnect (core/runtime/v2/
// shim_manager.go, `loadShim(ctx, bundle, func() {})`, read in 2.3.7);
// 2.4 (read in 2.4.2) runs cleanupAfterDeadShim for each. Whatever the
// shim, only the sandbox's task gets a delete there; what the containers
// leave is still asserted, as residue.
func containerRunsNoDelete(version string) bool {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major == 2 && minor < 4
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
	s.downAfterRestart(t, ctx, caseName, pods, time.Since(start), logOff, "")
}

// downAfterRestart is the end of the restart cases, per handler: the pod
// must be reported down after containerd's restart (restartTook ago plus
// the wait), StopPodSandbox and RemovePodSandbox must succeed and nothing
// may be left (why says what the case expected of the delete, for the
// message); the cell is recorded for every handler, asserted for ours.
func (s *suite) downAfterRestart(t *testing.T, ctx context.Context, caseName string, pods map[string]*Pod, restartTook time.Duration, logOff int64, why string) {
	t.Helper()
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
			t.Logf("%s: %s; restart took %s; %s", h, down, restartTook.Round(time.Millisecond), Summary(r))
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
				t.Errorf("left behind%s:\n%s\n--- containerd log since the restart ---\n%s", why, r, s.d.LogSince(logOff))
			}
		})
	}
}

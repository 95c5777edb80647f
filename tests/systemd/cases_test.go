package systemd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// breakCase breaks a running container as production does, so that its
// shim's delete has to clean up.
type breakCase struct {
	name string
	// restart: containerd is stopped before the damage and started after
	// it; it runs the delete at start-up for the dead shim.
	restart bool
	damage  func(c *ctr) error
}

var cases = []breakCase{
	{name: "shim SIGKILL", damage: func(c *ctr) error { return c.killShim() }},
	{name: "runc state removed", damage: func(c *ctr) error {
		if err := os.RemoveAll(c.runcState()); err != nil {
			return err
		}
		return c.killShim()
	}},
	{name: "runtime missing", damage: func(c *ctr) error {
		if err := os.Remove(filepath.Join(c.bundle(), "runtime")); err != nil {
			return err
		}
		return c.killShim()
	}},
	{name: "runtime binary missing", damage: func(c *ctr) error {
		if err := pointAtMissingRuntime(c.bundle()); err != nil {
			return err
		}
		return c.killShim()
	}},
	{name: "systemd slow: runc state removed, systemd stopped for 500ms from the shim's SIGKILL", damage: func(c *ctr) error {
		if err := os.RemoveAll(c.runcState()); err != nil {
			return err
		}
		return c.withSystemdFrozen(500*time.Millisecond, c.killShim)
	}},
	{name: "systemd slow: shim SIGKILL, systemd stopped for 500ms", damage: func(c *ctr) error {
		return c.withSystemdFrozen(500*time.Millisecond, c.killShim)
	}},
	{name: "containerd restarted: shim SIGKILL, runc state removed", restart: true, damage: func(c *ctr) error {
		if err := os.RemoveAll(c.runcState()); err != nil {
			return err
		}
		return c.killShim()
	}},
}

// pointAtMissingRuntime names a runtime binary that does not exist, in
// `runtime` and in options.json's binary_name.
func pointAtMissingRuntime(bundle string) error {
	if err := os.WriteFile(filepath.Join(bundle, "runtime"), []byte(harness.MissingRuntime), 0o600); err != nil {
		return err
	}
	p := filepath.Join(bundle, "options.json")
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	s := strings.TrimSpace(string(data))
	if !strings.HasPrefix(s, "{") {
		return fmt.Errorf("options.json: %q", s)
	}
	if s == "{}" {
		s = fmt.Sprintf(`{"binary_name":%q}`, harness.MissingRuntime)
	} else {
		s = fmt.Sprintf(`{"binary_name":%q,%s`, harness.MissingRuntime, s[1:])
	}
	return os.WriteFile(p, []byte(s), 0o600)
}

// table collects upstream's and our results for the side-by-side file.
var table struct {
	sync.Mutex
	rows []string
}

func record(daemon, cs, upstream, ours string) {
	table.Lock()
	defer table.Unlock()
	table.rows = append(table.rows, fmt.Sprintf("| %s | %s | %s | %s |", daemon, cs, upstream, ours))
}

func writeTable(t *testing.T) {
	table.Lock()
	defer table.Unlock()
	out := filepath.Join(env.repo, "tests/out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Error(err)
		return
	}
	var b strings.Builder
	b.WriteString("# systemd cgroup driver under a real systemd: what each shim leaves (`make systemd`)\n\n")
	b.WriteString("Containers in `kubepods-besteffort-pod<N>.slice:cri-containerd:<id>` (runc's systemd driver, SystemdCgroup),\n")
	b.WriteString("broken as named; \"clean\" means no process, no scope cgroup, scope unit not loaded, no task directory, no runc state.\n")
	b.WriteString("\"next\" tells whether a new container with the same id and cgroupsPath then started inside its own scope\n")
	b.WriteString("(after the test killed any process the delete left, and removed the task directory and runc state; the unit as the delete left it).\n")
	b.WriteString("Only ours is asserted.\n\n")
	b.WriteString("| containerd | case | upstream `containerd-shim-runc-v2` | ours `containerd-shim-runc-v2-robust` |\n|---|---|---|---|\n")
	b.WriteString(strings.Join(table.rows, "\n") + "\n")
	if err := os.WriteFile(filepath.Join(out, "systemd-side-by-side.md"), []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}

// TestSystemdCases runs every case on every daemon, upstream's shim and
// ours side by side; ours is asserted.
func TestSystemdCases(t *testing.T) {
	t.Cleanup(func() { writeTable(t) })
	for _, spec := range env.daemons {
		spec := spec
		t.Run("containerd-"+spec.name, func(t *testing.T) {
			d := newDaemon(t, spec)
			for i, cs := range cases {
				cs := cs
				t.Run(strings.ReplaceAll(cs.name, " ", "_"), func(t *testing.T) {
					upstream := runCase(t, d, cs, harness.RuntimeUpstream, fmt.Sprintf("up-%d", i), 2*i+1, false)
					ours := runCase(t, d, cs, harness.RuntimeRobust, fmt.Sprintf("ours-%d", i), 2*i+2, true)
					record(spec.name, cs.name, upstream, ours)
				})
			}
		})
	}
}

// runCase starts a container, breaks it, waits for containerd's delete,
// and returns what was left and whether the next container with the same
// id and cgroupsPath landed in its own scope. With assert, anything left
// fails the test.
func runCase(t *testing.T, d *daemon, cs breakCase, runtime, id string, pod int, assert bool) string {
	t.Helper()
	ctx := context.Background()
	fail := t.Errorf
	if !assert {
		fail = t.Logf
	}
	c, err := d.run(ctx, runtime, id, pod)
	if err != nil {
		if c != nil {
			c.scrub(ctx)
		}
		fail("%s: %v", runtime, err)
		return "did not start: " + err.Error()
	}
	if err := c.inOwnScope(); err != nil {
		c.scrub(ctx)
		fail("%s: before the case: %v", runtime, err)
		return "not in its scope at start: " + err.Error()
	}
	if cs.restart {
		if err := d.stop(); err != nil {
			t.Fatalf("stop containerd: %v", err)
		}
	}
	if err := cs.damage(c); err != nil {
		c.scrub(ctx)
		t.Fatalf("%s: damage: %v", runtime, err)
	}
	if cs.restart {
		if err := d.start(ctx); err != nil {
			t.Fatalf("start containerd: %v", err)
		}
	}
	c.waitDeleted(8 * time.Second)
	// A zombie unit shows itself a little later, once systemd has
	// processed the cgroup's removal: give it a moment.
	time.Sleep(300 * time.Millisecond)
	if assert {
		if line := deleteReport(d, id); line != "" {
			t.Logf("our delete: %s", line)
		}
	}
	left := c.residue()
	switch {
	case len(left) > 0 && assert:
		t.Errorf("%s: left after the delete: %s\n--- containerd log (tail) ---\n%s", runtime, strings.Join(left, ", "), harness.TailFile(d.log, 15))
	case len(left) > 0:
		t.Logf("%s: left after the delete: %s", runtime, strings.Join(left, ", "))
	}

	// The next container with the same id and cgroupsPath.
	next := "next in its scope"
	if err := c.forget(ctx); err != nil {
		t.Logf("%s: forget container: %v", runtime, err)
	}
	c.scrubKeepUnit(ctx)
	n, err := d.run(ctx, runtime, id, pod)
	switch {
	case err != nil:
		next = "next did not start: " + firstLine(err.Error())
		fail("%s: %s", runtime, next)
	default:
		if err := n.inOwnScope(); err != nil {
			next = "next NOT in its scope: " + err.Error()
			fail("%s: %s", runtime, next)
		}
	}
	if n != nil {
		if err := n.forget(ctx); err != nil {
			t.Logf("%s: delete next: %v", runtime, err)
		}
		if left := n.residue(); len(left) > 0 {
			t.Logf("%s: next container, deleted through containerd, left %v", runtime, left)
		}
		n.scrub(ctx)
	}
	c.scrub(ctx)
	result := "clean"
	if len(left) > 0 {
		result = strings.Join(left, ", ")
	}
	return result + "; " + next
}

// scrubKeepUnit removes what the case left except the unit itself, so
// that the next container meets systemd as the delete left it.
func (c *ctr) scrubKeepUnit(ctx context.Context) {
	for _, pid := range c.procs() {
		_ = killPid(pid)
	}
	harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { return len(c.procs()) == 0 })
	_, _ = c.d.sd.Output(ctx, "umount", "-R", "-l", filepath.Join(c.bundle(), "rootfs"))
	_ = os.RemoveAll(c.runcState())
	if ms := harness.MountsUnder([]int{c.d.sd.Pid}, c.bundle()); len(ms) == 0 {
		_ = os.RemoveAll(c.bundle())
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// withSystemdFrozen stops the private systemd (SIGSTOP to its PID 1) for
// d from just before f, as a busy systemd is slow to act on a scope whose
// cgroup empties and disappears, and on D-Bus calls. It always resumes it.
func (c *ctr) withSystemdFrozen(d time.Duration, f func() error) error {
	if err := syscall.Kill(c.d.sd.Pid, syscall.SIGSTOP); err != nil {
		return err
	}
	resumed := make(chan struct{})
	go func() {
		defer close(resumed)
		time.Sleep(d)
		_ = syscall.Kill(c.d.sd.Pid, syscall.SIGCONT)
	}()
	err := f()
	<-resumed
	return err
}

// deleteReport is the last report of our delete for id in containerd's log
// (containerd logs it as the delete's "cleanup warnings").
func deleteReport(d *daemon, id string) string {
	data, err := os.ReadFile(d.log)
	if err != nil {
		return ""
	}
	var last string
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "robust delete "+namespace+"/"+id+":"); i >= 0 {
			last = line[i:]
		}
	}
	return last
}

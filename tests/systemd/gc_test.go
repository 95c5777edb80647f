package systemd

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

// TestGCServiceTimer installs contrib/systemd's gc service and timer, as
// they ship, into the private systemd (our binary at their
// /usr/local/bin path, a tmpfs of the private systemd's own), with a
// drop-in that points gc at the private containerd's state directory,
// puts the metrics in the test's directory and the output in a file (the
// private systemd has no journald: it would write the host's journal).
// It leaves an orphan behind (containerd stopped, shim SIGKILLed, runc's
// state removed: only the systemd unit stop can clean its scope), enables
// the timer, starts the service and checks the report and that nothing of
// the orphan is left.
func TestGCServiceTimer(t *testing.T) {
	ctx := context.Background()
	sd := env.sd
	d := newDaemon(t, env.daemons[0])
	c, err := d.run(ctx, harness.RuntimeRobust, "gc-orphan", 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.scrub(ctx) })
	if err := c.inOwnScope(); err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(c.runcState()); err != nil {
		t.Fatal(err)
	}
	if err := c.killShim(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(c.bundle(), old, old); err != nil {
		t.Fatal(err)
	}

	contrib := filepath.Join(env.repo, "contrib/systemd")
	stage := filepath.Join(d.dir, "gc-units")
	metrics := filepath.Join(d.dir, "metrics")
	out := filepath.Join(d.dir, "gc.out")
	for _, f := range []string{"containerd-shim-robust-gc.service", "containerd-shim-robust-gc.timer"} {
		if err := harness.CopyFile(filepath.Join(contrib, f), filepath.Join(stage, f), 0o644); err != nil {
			if err := os.MkdirAll(stage, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := harness.CopyFile(filepath.Join(contrib, f), filepath.Join(stage, f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dropIn := fmt.Sprintf(`[Service]
Environment=CONTAINERD_SHIM_ROBUST_STATE_DIR=%s
Environment=CONTAINERD_SHIM_ROBUST_METRICS_DIR=%s
StandardOutput=append:%s
StandardError=append:%s
`, d.TaskState(), metrics, out, out)
	if err := os.WriteFile(filepath.Join(stage, "test.conf"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"cp", filepath.Join(stage, "containerd-shim-robust-gc.service"), filepath.Join(stage, "containerd-shim-robust-gc.timer"), "/etc/systemd/system/"},
		{"mkdir", "-p", "/etc/systemd/system/containerd-shim-robust-gc.service.d"},
		{"cp", filepath.Join(stage, "test.conf"), "/etc/systemd/system/containerd-shim-robust-gc.service.d/"},
		{"cp", env.oursIn, "/usr/local/bin/containerd-shim-runc-v2-robust"},
		{"systemctl", "daemon-reload"},
		{"systemctl", "enable", "--now", "containerd-shim-robust-gc.timer"},
	} {
		if _, err := sd.Output(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = sd.Output(ctx, "systemctl", "disable", "--now", "containerd-shim-robust-gc.timer")
	})
	if load, active, err := sd.UnitState("containerd-shim-robust-gc.timer"); err != nil || load != "loaded" || active != "active" {
		t.Fatalf("timer: %s/%s %v", load, active, err)
	}
	timers, err := sd.Output(ctx, "systemctl", "list-timers", "--all", "--no-pager", "containerd-shim-robust-gc.timer")
	if err != nil || !strings.Contains(timers, "containerd-shim-robust-gc.service") {
		t.Fatalf("list-timers does not show the timer triggering the service: %v\n%s", err, timers)
	}
	t.Logf("timer:\n%s", timers)

	// The timer's first run is OnBootSec=10min plus up to 2 min of
	// randomized delay: start the service now, as the README says.
	start := time.Now()
	_, runErr := sd.Output(ctx, "systemctl", "start", "containerd-shim-robust-gc.service")
	report, _ := os.ReadFile(out)
	t.Logf("gc service ran in %s; its output:\n%s", time.Since(start).Round(time.Millisecond), report)
	if runErr != nil {
		t.Fatalf("gc service: %v", runErr)
	}
	if load, active, err := sd.UnitState("containerd-shim-robust-gc.service"); err != nil || active == "failed" {
		t.Errorf("gc service: %s/%s %v", load, active, err)
	}
	if !strings.Contains(string(report), "deleted        "+namespace+"/"+c.id) && !strings.Contains(string(report), "deleted "+namespace+"/"+c.id) {
		t.Errorf("gc report does not say it deleted %s/%s", namespace, c.id)
	}
	if left := c.residue(); len(left) > 0 {
		t.Errorf("orphan not gone after the gc service: %s", strings.Join(left, ", "))
	}
	if _, err := os.Stat(filepath.Join(metrics, "containerd_shim_robust.prom")); err != nil {
		t.Errorf("metrics: %v", err)
	}
}

// TestGCReportsScopeResidue: upstream's shim, after runc's state was
// removed and its shim killed, leaves the container's scope (processes,
// cgroup, unit) with no task directory. gc reports it as systemd_scope
// residue, and deletes none of it.
func TestGCReportsScopeResidue(t *testing.T) {
	ctx := context.Background()
	d := newDaemon(t, env.daemons[0])
	c, err := d.run(ctx, harness.RuntimeUpstream, "scope-residue", 200)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.scrub(ctx) })
	if err := os.RemoveAll(c.runcState()); err != nil {
		t.Fatal(err)
	}
	if err := c.killShim(); err != nil {
		t.Fatal(err)
	}
	if !harness.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		_, err := os.Stat(c.bundle())
		return os.IsNotExist(err)
	}) {
		t.Fatalf("upstream's delete did not remove the task directory")
	}
	if len(c.procs()) == 0 {
		t.Fatalf("upstream's delete left no process: nothing to report (has upstream changed?)")
	}
	out, err := env.sd.Output(ctx, env.oursIn, "gc", "--state-dir", d.TaskState(), "--older-than", "0s")
	t.Logf("gc:\n%s", out)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	want := fmt.Sprintf("systemd_scope   %s/%s: no task directory; 3 processes; unit cri-containerd-%s.scope loaded/active", namespace, c.id, c.id)
	if !strings.Contains(out, want) {
		t.Errorf("gc report lacks %q", want)
	}
	if len(c.procs()) != 3 {
		t.Errorf("gc touched the residue: %d processes left, want 3", len(c.procs()))
	}
	if load, active, _ := env.sd.UnitState(c.unit.Name); load != "loaded" || active != "active" {
		t.Errorf("gc touched the unit: %s/%s", load, active)
	}
}

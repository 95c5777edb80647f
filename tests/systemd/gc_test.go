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
// service drop-in that points gc at the private containerd's state
// directory and puts the metrics in the test's directory, and a timer
// drop-in that makes the timer fire one second after it starts (the
// shipped one waits OnBootSec=10min). It leaves an orphan behind
// (containerd stopped, shim SIGKILLed, runc's state removed: only the
// systemd unit stop can clean its scope), enables and restarts the timer,
// and waits for the timer to run the service (never started by hand); then
// checks the report in the journal (journalctl inside the namespace; the
// private journald is volatile, on the namespace's /run tmpfs), that the
// host's /var/log/journal was not written, and that nothing of the orphan
// is left.
func TestGCServiceTimer(t *testing.T) {
	ctx := context.Background()
	sd := env.sd
	const (
		service = "containerd-shim-robust-gc.service"
		timer   = "containerd-shim-robust-gc.timer"
	)
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
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{service, timer} {
		if err := harness.CopyFile(filepath.Join(contrib, f), filepath.Join(stage, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	serviceDropIn := fmt.Sprintf(`[Service]
Environment=CONTAINERD_SHIM_ROBUST_STATE_DIR=%s
Environment=CONTAINERD_SHIM_ROBUST_METRICS_DIR=%s
`, d.TaskState(), metrics)
	// Test only: fire once, one second after the timer starts.
	timerDropIn := `[Timer]
OnBootSec=
OnUnitActiveSec=
OnActiveSec=1s
RandomizedDelaySec=0
AccuracySec=1us
`
	if err := os.WriteFile(filepath.Join(stage, "test.conf"), []byte(serviceDropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "now.conf"), []byte(timerDropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"cp", filepath.Join(stage, service), filepath.Join(stage, timer), "/etc/systemd/system/"},
		{"mkdir", "-p", "/etc/systemd/system/" + service + ".d", "/etc/systemd/system/" + timer + ".d"},
		{"cp", filepath.Join(stage, "test.conf"), "/etc/systemd/system/" + service + ".d/"},
		{"cp", filepath.Join(stage, "now.conf"), "/etc/systemd/system/" + timer + ".d/"},
		{"cp", env.oursIn, "/usr/local/bin/containerd-shim-runc-v2-robust"},
		{"systemctl", "daemon-reload"},
		{"systemctl", "enable", timer},
	} {
		if _, err := sd.Output(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = sd.Output(ctx, "systemctl", "disable", "--now", timer)
	})
	before := unitProps(t, sd, service, "InvocationID")
	timerBefore := unitProps(t, sd, timer, "LastTriggerUSec")
	start := time.Now()
	if _, err := sd.Output(ctx, "systemctl", "restart", timer); err != nil {
		t.Fatal(err)
	}
	if load, active, err := sd.UnitState(timer); err != nil || load != "loaded" || active != "active" {
		t.Fatalf("timer: %s/%s %v", load, active, err)
	}

	// The timer fires after 1 s; the service (oneshot) is done when it is
	// no longer activating under a new invocation.
	const runTimeout = 90 * time.Second
	var svc map[string]string
	if !harness.Poll(runTimeout, 100*time.Millisecond, func() bool {
		svc = unitProps(t, sd, service, "InvocationID", "ActiveState", "Result", "ExecMainStatus", "ExecMainStartTimestamp")
		return svc["InvocationID"] != "" && svc["InvocationID"] != before["InvocationID"] &&
			svc["ActiveState"] != "activating" && svc["ExecMainStartTimestamp"] != ""
	}) {
		timers, _ := sd.Output(ctx, "systemctl", "list-timers", "--all", "--no-pager", timer)
		t.Fatalf("the timer did not run the gc service within %s: service %v\n%s", runTimeout, svc, timers)
	}
	tm := unitProps(t, sd, timer, "LastTriggerUSec", "ActiveState", "SubState")
	t.Logf("timer fired; gc service ran (%s after the timer's restart): service %v, timer %v", time.Since(start).Round(time.Millisecond), svc, tm)
	if tm["LastTriggerUSec"] == "" || tm["LastTriggerUSec"] == "n/a" || tm["LastTriggerUSec"] == timerBefore["LastTriggerUSec"] {
		t.Errorf("timer's LastTriggerUSec %q (before %q): the timer did not trigger", tm["LastTriggerUSec"], timerBefore["LastTriggerUSec"])
	}
	if svc["Result"] != "success" || svc["ExecMainStatus"] != "0" {
		t.Errorf("gc service: Result=%s ExecMainStatus=%s", svc["Result"], svc["ExecMainStatus"])
	}

	// The report, from the journal. Stream lines may trail the unit's
	// exit a little: bounded wait for the delete line.
	want := []string{"deleted        " + namespace + "/" + c.id, "deleted " + namespace + "/" + c.id}
	var journal string
	found := harness.Poll(10*time.Second, 200*time.Millisecond, func() bool {
		out, err := sd.Output(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", service, "_SYSTEMD_INVOCATION_ID="+svc["InvocationID"])
		if err != nil {
			journal = err.Error()
			return false
		}
		journal = out
		return strings.Contains(out, want[0]) || strings.Contains(out, want[1])
	})
	t.Logf("journalctl -u %s (invocation %s):\n%s", service, svc["InvocationID"], journal)
	if !found {
		t.Errorf("the journal does not show the gc report deleting %s/%s", namespace, c.id)
	}
	if fs, err := sd.Output(ctx, "findmnt", "-n", "-o", "FSTYPE", "-T", "/run/log/journal"); err != nil || strings.TrimSpace(fs) != "tmpfs" {
		t.Errorf("the private journal is not on a tmpfs: %q %v", strings.TrimSpace(fs), err)
	}
	if written := writtenSince("/var/log/journal", sd.Started); len(written) > 0 {
		t.Errorf("the host's /var/log/journal was written since the private systemd started: %s", strings.Join(written, ", "))
	}
	if left := c.residue(); len(left) > 0 {
		t.Errorf("orphan not gone after the gc service: %s", strings.Join(left, ", "))
	}
	if _, err := os.Stat(filepath.Join(metrics, "containerd_shim_robust.prom")); err != nil {
		t.Errorf("metrics: %v", err)
	}
}

// unitProps is systemctl show -p for each of props of unit, inside the
// private systemd.
func unitProps(t *testing.T, sd *harness.Systemd, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"systemctl", "show"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := sd.Output(context.Background(), append(args, "--", unit)...)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	return m
}

// writtenSince lists what under dir (a host path; absent is fine) was
// created or modified at or after since.
func writtenSince(dir string, since time.Time) []string {
	var w []string
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := e.Info(); err == nil && !fi.ModTime().Before(since) {
			w = append(w, p)
		}
		return nil
	})
	return w
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

package ops

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/promtest"
)

func record(result Result, trigger string, d time.Duration, failed ...string) DeleteRecord {
	rec := DeleteRecord{Result: result, Trigger: trigger, DurationSeconds: d.Seconds()}
	for _, s := range failed {
		rec.Steps = append(rec.Steps, StepRecord{Step: s, Outcome: deletion.OutcomeFailed})
	}
	return rec
}

func TestMetricsConcurrentWritersAddUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "textfile") // created on first use
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Metrics per writer: each opens the lock file anew, as
			// separate processes do.
			m := &Metrics{Dir: dir}
			for i := 0; i < each; i++ {
				errs <- m.RecordDelete(record(ResultDeleted, TriggerContainerd, 30*time.Millisecond))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m := &Metrics{Dir: dir}
	if err := m.RecordDelete(record(ResultLeft, TriggerManual, 2*time.Second, deletion.StepUnmount, deletion.StepRemove)); err != nil {
		t.Fatal(err)
	}
	if err := m.RecordDelete(record(ResultRefused, TriggerManual, 0)); err != nil {
		t.Fatal(err)
	}

	fams := promtest.Parse(t, filepath.Join(dir, MetricsFile))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{metricDeletes, []string{"trigger", "containerd", "result", "deleted"}, writers * each},
		{metricDeletes, []string{"trigger", "manual", "result", "left"}, 1},
		{metricDeletes, []string{"trigger", "manual", "result", "refused"}, 1},
		{metricDeletes, []string{"trigger", "gc", "result", "deleted"}, 0},
		{metricStepsFailed, []string{"step", "unmount"}, 1},
		{metricStepsFailed, []string{"step", "kill"}, 0},
		{metricDuration, nil, writers*each + 1}, // refused deletes have no duration
	} {
		got, ok := fams.Value(c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	h := fams[metricDuration].GetMetric()[0].GetHistogram()
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 2.5:
			want = writers*each + 1
		case b.GetUpperBound() >= 0.05:
			want = writers * each
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestMetricsGCGaugesAndCorruptState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, metricsStateFile), []byte("\x00garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Metrics{Dir: dir}
	g := &GCReport{
		Started:      time.Unix(1700000000, 0),
		OldestOrphan: 90 * time.Minute,
		Tasks:        []GCTask{{Status: GCOrphan}, {Status: GCOrphan}, {Status: GCLive}},
		Residue:      []GCResidue{{Kind: ResidueCgroup}, {Kind: ResidueRuncState}, {Kind: ResidueCgroup}},
	}
	if err := m.RecordGC(g); err != nil {
		t.Fatal(err)
	}
	g2 := *g
	g2.DryRun, g2.Residue = true, nil
	if err := m.RecordGC(&g2); err != nil {
		t.Fatal(err)
	}
	fams := promtest.Parse(t, filepath.Join(dir, MetricsFile))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{metricGCRuns, []string{"mode", "sweep"}, 1},
		{metricGCRuns, []string{"mode", "dry-run"}, 1},
		{metricGCTasks, []string{"status", "orphan"}, 2},
		{metricGCTasks, []string{"status", "young"}, 0},
		{metricGCOldest, nil, 5400},
		{metricGCLastRun, nil, 1700000000},
		{metricResidue, []string{"kind", "cgroup"}, 0}, // the last run found none
		{metricDeletes, []string{"trigger", "gc", "result", "deleted"}, 0},
	} {
		got, ok := fams.Value(c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

func TestMetricsNilAndLockTimeout(t *testing.T) {
	var m *Metrics
	if err := m.RecordDelete(DeleteRecord{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvMetricsDir, "")
	if MetricsFromEnv() != nil {
		t.Fatal("no directory, no metrics")
	}
	dir, err := openMetricsDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	unlock, err := lockFile(int(dir.Fd()), dir.Name(), metricsLockFile, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	start := time.Now()
	if _, err := lockFile(int(dir.Fd()), dir.Name(), metricsLockFile, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "still held") {
		t.Fatalf("second lock: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("lock wait took %s, bounded at 100ms", d)
	}
}

// TestMetricsNeverWriteThroughALink: a symbolic link planted in the metrics
// directory (which an exporter's user may write in) in place of the lock,
// state or metrics file never makes an update create or change a file
// elsewhere.
func TestMetricsNeverWriteThroughALink(t *testing.T) {
	for _, name := range []string{metricsLockFile, metricsStateFile, MetricsFile} {
		t.Run(name, func(t *testing.T) {
			dir, elsewhere := t.TempDir(), t.TempDir()
			nologin := filepath.Join(elsewhere, "nologin")
			existing := filepath.Join(elsewhere, "passwd")
			if err := os.WriteFile(existing, []byte("root:x:0:0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			target := nologin
			if name != metricsLockFile {
				target = existing
			}
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
			err := (&Metrics{Dir: dir}).RecordDelete(record(ResultDeleted, TriggerManual, time.Millisecond))
			if _, serr := os.Lstat(nologin); serr == nil {
				t.Fatalf("the update created %s through the link (update returned %v)", nologin, err)
			}
			if data, _ := os.ReadFile(existing); string(data) != "root:x:0:0\n" {
				t.Fatalf("the update changed %s through the link: %q", existing, data)
			}
			if name == metricsLockFile && (err == nil || !strings.Contains(err.Error(), "symbolic link")) {
				t.Errorf("a link in place of the lock file: update returned %v, want it refused", err)
			}
		})
	}
}

// TestMetricsRefuseADirectoryNotOwnedByRoot: a metrics directory owned by
// another user is refused, and nothing is written in it.
func TestMetricsRefuseADirectoryNotOwnedByRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (chown)")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := (&Metrics{Dir: dir}).RecordDelete(record(ResultDeleted, TriggerManual, time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "not by root") {
		t.Fatalf("update in a directory owned by uid 65534 returned %v, want it refused", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("files were created in the refused directory: %v", entries)
	}
}

package ops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestResultExitStatus is the one table from how a delete ended to an exit
// status, by who ran it: containerd's delete fails exactly when Delete
// returned an error; by hand the task gone is success and a live shim a
// refusal; gc fails on anything left and leaves a shim that came alive.
func TestResultExitStatus(t *testing.T) {
	want := map[Result][3]int{ // containerd, manual, gc
		ResultDeleted:    {ExitOK, ExitOK, ExitOK},
		ResultIncomplete: {ExitOK, ExitOK, ExitFailed},
		ResultLeft:       {ExitFailed, ExitFailed, ExitFailed},
		ResultError:      {ExitFailed, ExitFailed, ExitFailed},
		ResultRefused:    {ExitFailed, ExitRefused, ExitOK},
	}
	for _, r := range Results {
		for i, trigger := range []string{TriggerContainerd, TriggerManual, TriggerGC} {
			if got := r.ExitStatus(trigger); got != want[r][i] {
				t.Errorf("%s by %s: exit %d, want %d", r, trigger, got, want[r][i])
			}
		}
	}
	if got := Result("bogus").ExitStatus(TriggerManual); got != ExitFailed {
		t.Errorf("an unknown result: exit %d, want %d", got, ExitFailed)
	}
	// containerd's column is the framework's: 1 exactly when Delete
	// returned an error.
	for _, err := range []error{nil, deletion.ErrUnsafe, deletion.ErrShimAlive, errors.New("resolve: cannot lock")} {
		rep := &deletion.Report{}
		if got, want := ResultOf(rep, err).ExitStatus(TriggerContainerd) != ExitOK, err != nil; got != want {
			t.Errorf("containerd's delete with error %v: failed %v", err, got)
		}
	}
}

// TestRunDelete: RunDelete runs the delete, records it with its trigger,
// counts it in the metrics, and its exit status is the table's; an
// invalid request by hand is ExitUsage, touching nothing.
func TestRunDelete(t *testing.T) {
	testutil.NeedRoot(t)
	state := t.TempDir()
	metrics := &Metrics{Dir: t.TempDir()}
	dead := filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	id := testutil.RandID("rundelete")
	dir := filepath.Join(state, "robust-test", id)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "address"), []byte("unix://"+dead), 0o644); err != nil {
		t.Fatal(err)
	}

	run := RunDelete(context.Background(), deletion.Request{Namespace: "robust-test", ID: id, StateDir: state}, TriggerManual, metrics)
	if run.Err != nil || run.Report == nil || run.Record.Result != ResultDeleted || run.Record.Trigger != TriggerManual || run.Record.Bundle != dir || run.ExitStatus() != ExitOK || run.MetricsErr != nil {
		t.Fatalf("delete of a dead task: %+v", run)
	}
	testutil.AssertGone(t, dir)

	run = RunDelete(context.Background(), deletion.Request{Namespace: "robust-test", ID: "../etc", StateDir: state}, TriggerManual, metrics)
	if !run.Invalid() || run.Record.Result != ResultError || run.ExitStatus() != ExitUsage {
		t.Errorf("invalid id by hand: invalid %v, result %s, exit %d", run.Invalid(), run.Record.Result, run.ExitStatus())
	}
	run.Record.Trigger = TriggerGC
	if run.ExitStatus() != ExitFailed {
		t.Errorf("invalid id in gc: exit %d, want %d", run.ExitStatus(), ExitFailed)
	}

	prom, err := os.ReadFile(filepath.Join(metrics.Dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("%s{trigger=%q,result=%q} 1", metricDeletes, TriggerManual, ResultDeleted),
		fmt.Sprintf("%s{trigger=%q,result=%q} 1", metricDeletes, TriggerManual, ResultError),
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("metrics lack %q:\n%s", want, prom)
		}
	}
}

package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// DeleteRun is one delete run by RunDelete: what deletion.Delete returned,
// its record, and whether the record reached the metrics.
type DeleteRun struct {
	// Report and Err are what deletion.Delete returned.
	Report *deletion.Report
	Err    error
	// Record is the delete's record (NewDeleteRecord), with the trigger
	// given to RunDelete.
	Record DeleteRecord
	// MetricsErr is why the record could not be added to the metrics;
	// nil when it was, or when there are no metrics.
	MetricsErr error
}

// RunDelete is the one way a delete runs, whoever runs it (trigger:
// TriggerContainerd, TriggerManual or TriggerGC): deletion.Delete with
// req, the record of what it did (NewDeleteRecord), and the record counted
// in m (Metrics.RecordDelete; a nil m counts nothing). Whether the task's
// shim may be alive is req.LiveShim's to say: deletion.Delete decides it
// under the task directory's lock, after its one load, and refuses with
// deletion.ErrShimAlive (Result ResultRefused) when RefuseLiveShim says
// so. RunDelete prints nothing: the caller renders the record or the
// report.
//
// A delete by hand that refuses a live shim (TriggerManual,
// RefuseLiveShim) is first held to liveness.Prober.Probe, the judgement gc
// makes (shimAliveBeforeDelete): until deletion's shim step looks at
// everything Probe does, this keeps it from deleting a task whose shim
// still runs.
func RunDelete(ctx context.Context, req deletion.Request, trigger string, m *Metrics) DeleteRun {
	if trigger == TriggerManual && req.LiveShim == deletion.RefuseLiveShim {
		if path, err := shimAliveBeforeDelete(req); err != nil {
			run := DeleteRun{Err: err, Record: NewDeleteRecord(nil, err, ResultRefused, trigger)}
			run.Record.Namespace, run.Record.ID, run.Record.Bundle, run.Record.ExitedAt = req.Namespace, req.ID, path, time.Now()
			run.MetricsErr = m.RecordDelete(run.Record)
			return run
		}
	}
	rep, err := deletion.Delete(ctx, req)
	run := DeleteRun{Report: rep, Err: err, Record: NewDeleteRecord(rep, err, "", trigger)}
	run.MetricsErr = m.RecordDelete(run.Record)
	return run
}

// Invalid reports whether the delete did not start because its request
// was invalid (namespace or id): nothing was touched.
func (d DeleteRun) Invalid() bool { return errors.Is(d.Err, bundle.ErrInvalid) }

// ExitStatus is the exit status of this delete run by its trigger
// (Result.ExitStatus), except that an invalid request run by hand is
// ExitUsage.
func (d DeleteRun) ExitStatus() int {
	if d.Record.Trigger == TriggerManual && d.Invalid() {
		return ExitUsage
	}
	return d.Record.Result.ExitStatus(d.Record.Trigger)
}

// Exit statuses of the binary's own commands: `delete` (containerd's keeps
// the shim framework's: ExitOK, or ExitFailed with "name: error" on
// stderr), `gc`, `install` and `uninstall`.
const (
	// ExitOK: delete: the container is gone (something outside the task
	// directory may be left: see the report); gc: every delete it ran
	// ended in ResultDeleted (or was refused: a shim that came alive is
	// left).
	ExitOK = 0
	// ExitFailed: delete: the task directory was left in place (a mount or
	// a container process would not go), or could not be opened; gc: a
	// delete did not end in ResultDeleted, or the state directory could
	// not be read.
	ExitFailed = 1
	// ExitUsage: bad flags, or an invalid namespace or id: nothing touched.
	ExitUsage = 2
	// ExitRefused: delete by hand: the task's shim is alive and -force was
	// not given: nothing touched.
	ExitRefused = 3
)

// exitStatuses is the one table from how a delete ended to an exit
// status, for each trigger: containerd's delete (the framework's 0 or 1:
// 1 exactly when deletion.Delete returned an error), by hand, and within
// gc (whose run exits with the worst of its deletes', GCReport.ExitStatus).
var exitStatuses = map[Result]struct{ containerd, manual, gc int }{
	ResultDeleted: {ExitOK, ExitOK, ExitOK},
	// The task directory is gone: containerd and a person are done; gc
	// says something is left.
	ResultIncomplete: {ExitOK, ExitOK, ExitFailed},
	ResultLeft:       {ExitFailed, ExitFailed, ExitFailed},
	// By hand, an invalid request is ExitUsage (DeleteRun.ExitStatus).
	ResultError: {ExitFailed, ExitFailed, ExitFailed},
	// containerd's delete leaves a live shim instead of refusing; gc
	// leaves the task of a shim that came alive after it looked.
	ResultRefused: {ExitFailed, ExitRefused, ExitOK},
}

// ExitStatus is the exit status of a delete that ended in r, run by
// trigger (TriggerContainerd, TriggerManual, TriggerGC); ExitFailed for a
// result or trigger it does not know.
func (r Result) ExitStatus(trigger string) int {
	e, ok := exitStatuses[r]
	if !ok {
		return ExitFailed
	}
	switch trigger {
	case TriggerContainerd:
		return e.containerd
	case TriggerManual:
		return e.manual
	case TriggerGC:
		return e.gc
	}
	return ExitFailed
}

// shimAliveBeforeDelete loads the task directory of req read-only and
// probes its shim (liveness.Prober.Probe): an error wrapping
// deletion.ErrShimAlive, and the task directory, when the shim is alive.
// Probe finds what deletion's shim step finds under the task directory's
// lock (a shim that answers, hangs or cannot be asked) and more, which
// that step does not look at yet: a shim process still holding the task's
// socket whose file is gone, a shim process of the task with no socket
// recorded, or the container's verified init a live shim's child. A task
// directory that cannot be found or loaded is left to deletion.Delete,
// which reports it.
//
// Interim (issue 17): it is the one check made before the lock, and the
// task directory is loaded twice; it goes once deletion's RefuseLiveShim
// refuses on Probe's judgement.
func shimAliveBeforeDelete(req deletion.Request) (path string, err error) {
	path, err = req.TaskDir()
	if err != nil {
		return "", nil
	}
	b, err := bundle.Load(path, req.Namespace, req.ID)
	if err != nil {
		return "", nil
	}
	if st := liveness.NewProber().Probe(b); st.Alive {
		return path, fmt.Errorf("%w (%s)", deletion.ErrShimAlive, st.Why)
	}
	return "", nil
}

package ops

import (
	"context"
	"errors"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
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
// in m (Metrics.RecordDelete; a nil m counts nothing). It asks no shim
// itself: what a live shim means is req.LiveShim's to say, and
// deletion.Delete decides whether the shim is alive under the task
// directory's lock, after its one load, refusing with
// deletion.ErrShimAlive (ResultRefused) under RefuseLiveShim. RunDelete
// prints nothing: the caller renders the record or the report.
func RunDelete(ctx context.Context, req deletion.Request, trigger string, m *Metrics) DeleteRun {
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

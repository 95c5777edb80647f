package ops

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
)

// deleteAll deletes the orphans r.g.Tasks[i] for i in idx, at most
// opts.Parallel at a time. Each delete is independent: deletion.Delete
// locks its task directory, and each writes only its own GCTask, so the
// report is the one a sequential sweep makes. When ctx ends, the deletes
// not started are not started: their tasks are left, and say so.
func (r *gcRun) deleteAll(ctx context.Context, idx []int) {
	if len(idx) == 0 {
		return
	}
	var (
		mu   sync.Mutex // p, Progress, r.g.Problems
		p    = GCProgress{Total: len(idx)}
		wg   sync.WaitGroup
		next = make(chan int)
	)
	progress := func() {
		if r.opts.Progress != nil {
			r.opts.Progress(p)
		}
	}
	progress()
	for range min(r.opts.Parallel, len(idx)) {
		wg.Go(func() {
			for i := range next {
				t := &r.g.Tasks[i]
				err := r.delete(ctx, t)
				mu.Lock()
				switch t.Action {
				case GCDeleted:
					p.Deleted++
				case GCFailed:
					p.Failed++
				default:
					p.Left++
				}
				if err != nil {
					r.g.problem(err)
				}
				progress()
				mu.Unlock()
			}
		})
	}
	started := 0
feed:
	for _, i := range idx {
		select {
		case next <- i:
			started++
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if started < len(idx) {
		for _, i := range idx[started:] {
			r.g.Tasks[i].Why += "; not deleted: gc stopped first"
		}
		r.g.problem(fmt.Errorf("gc stopped: %w: %d orphans not deleted", ctx.Err(), len(idx)-started))
	}
}

// sweepMountsMaxAge is how old the mount table a sweep's deletes share may
// be. Each delete confirms every mount point on the live system before it
// removes anything (a mount made after the reading is left in place and
// reported, and the next sweep takes it down), so the age bounds only how
// long such a mount can wait, never what is removed.
const sweepMountsMaxAge = time.Second

// delete deletes one orphan (RunDelete), unless it changed since the
// sweep looked at it (recheck), and records the delete in t and in the
// metrics; the error is the metrics'. Its action follows the delete's exit
// status within gc (Result.ExitStatus): GCDeleted, GCFailed, or GCLeft
// when the delete refused.
func (r *gcRun) delete(ctx context.Context, t *GCTask) error {
	if why := r.recheck(t); why != "" {
		t.Why += "; not deleted: " + why
		return nil
	}
	// The sweep's mount table and liveness.Prober (its one scan of /proc)
	// serve every delete; each delete still asks the shim's socket afresh
	// under the task directory's lock.
	req := deletion.Request{Namespace: t.Namespace, ID: t.ID, Bundle: t.Path, Mounts: r.mounts, Prober: r.prober}
	run := RunDelete(ctx, req, TriggerGC, r.opts.Metrics)
	t.Delete, t.report = &run.Record, run.Report
	switch {
	case run.Record.Result == ResultRefused:
		// The shim came alive (or hung) after the recheck: the delete
		// refused under the task directory's lock, having touched nothing.
		t.Action = GCLeft
		t.Why += "; not deleted: " + run.Err.Error()
	case run.ExitStatus() != ExitOK:
		t.Action = GCFailed
	default:
		t.Action = GCDeleted
	}
	return run.MetricsErr
}

// recheck looks at an orphan again just before its delete, which may come
// long after the sweep looked at it: it returns why the task directory is
// no longer the orphan the sweep saw ("" when it still is): its mtime
// changed (containerd may have made a new task of the same id: it writes a
// task directory's files by renaming them into place), or the shim's
// socket it named now answers. Its action then stays GCLeft. A task
// directory gone meanwhile (containerd, or the delete of its sandbox,
// removed it) is still an orphan: its delete finds it gone and finishes
// what is left (runc state, cgroups), as a second delete does. It reads no
// file of the task directory: the delete does.
func (r *gcRun) recheck(t *GCTask) string {
	fi, err := os.Lstat(t.Path)
	switch {
	case err != nil:
		return "" // gone (see above), or the delete reports it
	case !fi.ModTime().Equal(t.mtime):
		return fmt.Sprintf("changed since gc looked at it (mtime %s, was %s)", fi.ModTime().Format(time.RFC3339Nano), t.mtime.Format(time.RFC3339Nano))
	}
	b := &bundle.Bundle{Path: t.Path, Namespace: t.Namespace, ID: t.ID, Address: t.address}
	if st := r.prober.Probe(b); st.Alive {
		return "its shim answers now: " + st.Why
	}
	return ""
}

package ops

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// DefaultStateDir is containerd's runtime v2 task state directory with the
// default configuration (state = "/run/containerd"), in containerd 1.6, 1.7
// and 2.x: task directories are <DefaultStateDir>/<namespace>/<id>.
const DefaultStateDir = DefaultContainerdState + "/" + bundle.TaskStateDirName

// DefaultOlderThan is gc's default age threshold: a task directory whose
// mtime is younger may be one containerd is still creating or deleting.
const DefaultOlderThan = 5 * time.Minute

// CreationWindow bounds how long containerd may take to create a task
// directory's shim: from making the directory (bundle.go NewBundle) to the
// shim's socket being recorded in it (address, written by the shim's
// `start` once it listens; bootstrap.json, written by containerd 2.x when
// `start` returns). In that window the directory has no socket record and
// no shim answers, so liveness cannot tell it from an orphan. containerd
// bounds `start` only by its caller's context; kubelet's default runtime
// request timeout is 2 minutes. Whatever --older-than says, gc leaves a
// task directory younger than this with no socket record (status young):
// --older-than 0s is therefore safe against a task being created. Once the
// socket is recorded the shim listens, and liveness sees it.
const CreationWindow = 2 * time.Minute

// GCOptions configures GC.
type GCOptions struct {
	// StateDir is containerd's runtime v2 task state directory; "" means
	// DefaultStateDir.
	StateDir string
	// RuncRoot is where runc keeps its state (<root>/<ns>/<id>) for the
	// residue scan, besides every root named by a task's options.json;
	// "" means DefaultRuncRoot.
	RuncRoot string
	// OlderThan: orphans whose task directory's mtime is younger are
	// left (status young).
	OlderThan time.Duration
	// DryRun lists what would be deleted and why, and changes nothing.
	DryRun bool
	// Namespace restricts gc to one namespace; "" means every namespace.
	Namespace string
	// Metrics, when not nil, records every delete and the run.
	Metrics *Metrics
	// Parallel bounds the deletes that run at the same time; 0 or less
	// means DefaultParallel(). The report does not depend on it: tasks are
	// listed in the same order (namespace, then id) whatever the order in
	// which their deletes end.
	Parallel int
	// Progress, when not nil, is called when the deletes start (all
	// counts 0) and each time one ends, never concurrently. It is not
	// called in a dry run, nor when there is nothing to delete.
	Progress func(GCProgress)
	// StateDirFrom says where StateDir came from (e.g. "--state-dir",
	// "state in /etc/containerd/config.toml"); StateDirNote says how it
	// was understood (e.g. that a containerd state root was given). Both
	// are copied to the report as they are; "" leaves them out.
	StateDirFrom, StateDirNote string
}

// DefaultRuncRoot is runc's root as containerd's runc shim runs it
// (bundle.DefaultRuncRoot): gc's residue scan reads it when
// GCOptions.RuncRoot is "".
const DefaultRuncRoot = bundle.DefaultRuncRoot

// Validate returns what gc's command line must refuse in o: a Namespace
// that is not one (wrapping bundle.ErrInvalid), a negative OlderThan, a
// Parallel below 1 (GC itself reads 0 as DefaultParallel; the command
// line always sets it). Its messages name gc's flags.
func (o GCOptions) Validate() error {
	if o.Namespace != "" {
		if err := bundle.ValidateNamespace(o.Namespace); err != nil {
			return err
		}
	}
	if o.OlderThan < 0 {
		return errors.New("--older-than must not be negative")
	}
	if o.Parallel < 1 {
		return errors.New("--parallel must be at least 1")
	}
	return nil
}

// GCProgress counts the deletes of a gc run so far.
type GCProgress struct {
	// Deleted and Failed count the deletes that ended GCDeleted and
	// GCFailed; Left the orphans left at the last moment (changed or
	// alive again when their turn came: see GCTask.Why).
	Deleted, Failed, Left int
	// Total is the number of orphans gc is to delete.
	Total int
}

// Done reports whether every orphan has been dealt with.
func (p GCProgress) Done() bool { return p.Deleted+p.Failed+p.Left >= p.Total }

// DefaultParallel is gc's default bound on deletes at a time: the number
// of CPUs this process may use, at least 1.
func DefaultParallel() int { return max(1, runtime.NumCPU()) }

// GCStatus is what gc found a task directory to be.
type GCStatus string

// Statuses of a task directory seen by gc.
const (
	// GCLive: its shim is alive (or could not be ruled out): never touched.
	GCLive GCStatus = "live"
	// GCOrphan: its shim is dead and it is older than the threshold:
	// deleted (or, with DryRun, would be).
	GCOrphan GCStatus = "orphan"
	// GCYoung: its shim is dead but it is younger than the threshold: left.
	GCYoung GCStatus = "young"
	// GCSkipped: not a runc v2 task directory gc can vouch for (another
	// shim's, an invalid name, not a directory): left.
	GCSkipped GCStatus = "skipped"
)

// GCStatuses lists every GCStatus.
var GCStatuses = []GCStatus{GCLive, GCOrphan, GCYoung, GCSkipped}

// GCAction is what gc did with a task directory.
type GCAction string

// Actions of gc on a task directory.
const (
	GCDeleted     GCAction = "deleted"      // deleted, nothing left (ResultDeleted)
	GCFailed      GCAction = "failed"       // deleted with something left, or not at all: see Delete
	GCWouldDelete GCAction = "would delete" // DryRun: an orphan it would delete
	GCLeft        GCAction = "left"         // not touched: see Status and Why
)

// GCTask is one task directory seen by gc.
type GCTask struct {
	Namespace  string        `json:"namespace"`
	ID         string        `json:"id"`
	Path       string        `json:"path"`
	Status     GCStatus      `json:"status"`
	Action     GCAction      `json:"action"`
	Why        string        `json:"why"`
	Age        time.Duration `json:"-"`
	AgeSeconds float64       `json:"age_seconds"`
	// Delete is the record of the delete gc ran; nil when it ran none.
	Delete *DeleteRecord `json:"delete,omitempty"`

	report *deletion.Report
	// mtime (of the task directory) and address (the shim's) are what
	// the sweep saw, for recheck.
	mtime   time.Time
	address string
}

// Kinds of residue gc reports outside task directories.
const (
	// ResidueRuncState: runc's state directory <runc root>/<ns>/<id> for a
	// task that has no task directory, and whose init (if alive) is not a
	// shim's child.
	ResidueRuncState = "runc_state"
	// ResidueCgroup: cgroups named /<ns>/<id> (in any hierarchy) for a task
	// that has no task directory, none of whose processes is a shim's
	// child.
	ResidueCgroup = "cgroup"
	// ResiduePartialRemoval: <state>/<ns>/.<id>, containerd's task
	// directory renamed for removal and not removed (it may hold a mount).
	ResiduePartialRemoval = "partial_removal"
)

// ResidueKinds lists every kind of residue.
var ResidueKinds = []string{ResidueRuncState, ResidueCgroup, ResiduePartialRemoval, ResidueSystemdScope}

// GCResidue is one thing outside the task directories that gc attributes to
// a dead task. gc only reports it: nothing is deleted on its say-so.
type GCResidue struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	ID        string   `json:"id"`
	Paths     []string `json:"paths"`
	Detail    string   `json:"detail"`
}

// GCReport is what one gc run saw and did.
type GCReport struct {
	StateDir string `json:"state_dir"`
	// StateDirFrom and StateDirNote are GCOptions' (omitted when empty).
	StateDirFrom     string    `json:"state_dir_from,omitempty"`
	StateDirNote     string    `json:"state_dir_note,omitempty"`
	RuncRoots        []string  `json:"runc_roots"`
	Namespace        string    `json:"namespace,omitempty"`
	OlderThanSeconds float64   `json:"older_than_seconds"`
	DryRun           bool      `json:"dry_run"`
	Started          time.Time `json:"started"`
	DurationSeconds  float64   `json:"duration_seconds"`
	// OldestOrphan is the age of the oldest task directory with a dead
	// shim (orphan or young); 0 when there is none.
	OldestOrphan        time.Duration  `json:"-"`
	OldestOrphanSeconds float64        `json:"oldest_orphan_age_seconds"`
	Summary             map[string]int `json:"summary"`
	Tasks               []GCTask       `json:"tasks"`
	Residue             []GCResidue    `json:"residue"`
	// Problems are what gc could not read or record; they do not fail the
	// run unless the state directory itself could not be read.
	Problems []string `json:"problems"`

	unreadable bool
}

// ExitStatus is gc's exit status: ExitFailed when the state directory
// could not be read or a delete it ran failed (GCFailed: its result's exit
// status within gc, Result.ExitStatus, is not ExitOK), else ExitOK.
func (g *GCReport) ExitStatus() int {
	if g.unreadable {
		return ExitFailed
	}
	for _, t := range g.Tasks {
		if t.Action == GCFailed {
			return ExitFailed
		}
	}
	return ExitOK
}

// Failed reports whether a delete run by gc did not end in ResultDeleted
// (nor was refused), or the state directory could not be read: whether
// ExitStatus is not ExitOK.
func (g *GCReport) Failed() bool { return g.ExitStatus() != ExitOK }

// GC finds the orphaned runc v2 task directories under the state directory
// in every namespace (or opts.Namespace) and deletes each with RunDelete
// (deletion.Delete, as containerd would have, recorded and counted): an orphan's shim is dead (its socket is missing or
// refuses connections, no shim process runs for the task, and the
// container's verified init is not a shim's child) and its task directory
// is older than opts.OlderThan by its mtime (and, without a recorded shim
// socket, older than CreationWindow). A task whose shim answers, or whose
// liveness cannot be ruled out, is never touched. Directories that are not
// task directories (bundle.CheckTaskDir: a mistaken state directory's
// <dir>/<x>/<y>) or not recognisably runc v2's (see runcEvidence) are left
// (status skipped), and so said.
//
// It reads as its four steps:
//
//  1. sweep (sweep.go): every task directory looked at and classified
//     (namespaces and ids in name order); nothing deleted;
//  2. deleteAll (gcdelete.go): the orphans' deletes, opts.Parallel at a
//     time, each orphan looked at again just before (recheck), each end
//     reported to opts.Progress; when ctx ends, during the sweep or the
//     deletes, the orphans found whose delete has not started are left
//     and say so;
//  3. scanResidue (residue.go, systemd.go): what is outside task
//     directories that it can attribute to a dead task (runc state,
//     cgroups, systemd scopes, containerd's half-done removals), reported
//     without touching it;
//  4. the summary and the metrics (opts.Metrics).
//
// The report lists the tasks in the order they were looked at, whatever
// the order in which deletes end. With opts.DryRun it only reads: the
// report says what it would delete and why. GC never returns an error:
// what went wrong is in the report (see GCReport.ExitStatus).
func GC(ctx context.Context, opts GCOptions) *GCReport {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.RuncRoot == "" {
		opts.RuncRoot = DefaultRuncRoot
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		stateDir = opts.StateDir
	}
	if opts.Parallel <= 0 {
		opts.Parallel = DefaultParallel()
	}
	g := &GCReport{
		StateDir:         stateDir,
		StateDirFrom:     opts.StateDirFrom,
		StateDirNote:     opts.StateDirNote,
		Namespace:        opts.Namespace,
		OlderThanSeconds: opts.OlderThan.Seconds(),
		DryRun:           opts.DryRun,
		Started:          time.Now(),
		Tasks:            []GCTask{},
		Residue:          []GCResidue{},
		Problems:         []string{},
	}
	r := &gcRun{opts: opts, g: g, stateDir: stateDir, roots: map[string]bool{opts.RuncRoot: true}, namespaces: map[string]bool{},
		mounts: &mounttable.Shared{MaxAge: sweepMountsMaxAge}}
	orphans := r.sweep(ctx)   // classify every task directory (sweep.go)
	r.deleteAll(ctx, orphans) // delete the orphans (gcdelete.go)
	r.scanResidue()           // report what is outside task directories (residue.go)
	r.summarize()
	if err := opts.Metrics.RecordGC(g); err != nil {
		g.problem(err)
	}
	return g
}

// gcRun is one run of GC.
type gcRun struct {
	opts     GCOptions
	g        *GCReport
	stateDir string
	prober   *liveness.Prober
	// roots are the runc roots to scan for residue; namespaces are the
	// namespaces seen (task state and runc roots), for the cgroup scan.
	roots      map[string]bool
	namespaces map[string]bool
	// mounts is the mount table the sweep's deletes share (read again
	// once older than sweepMountsMaxAge): reading mountinfo costs time for
	// every mount on the host, and a host with N orphans has N rootfs
	// mounts, so one reading per delete would make a sweep quadratic.
	mounts *mounttable.Shared
}

// summarize fills in the report's totals: the runc roots scanned, the
// summary counts, the oldest orphan's age in seconds and the duration.
func (r *gcRun) summarize() {
	g := r.g
	for root := range r.roots {
		g.RuncRoots = append(g.RuncRoots, root)
	}
	sort.Strings(g.RuncRoots)
	g.OldestOrphanSeconds = g.OldestOrphan.Seconds()
	g.Summary = map[string]int{}
	for _, t := range g.Tasks {
		g.Summary[string(t.Status)]++
		g.Summary[string(t.Action)]++
	}
	g.Summary["residue"] = len(g.Residue)
	g.DurationSeconds = time.Since(g.Started).Seconds()
}

func (g *GCReport) problem(err error) { g.Problems = append(g.Problems, err.Error()) }

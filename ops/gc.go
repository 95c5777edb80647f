package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// DefaultStateDir is containerd's runtime v2 task state directory with the
// default configuration (state = "/run/containerd"), in containerd 1.6, 1.7
// and 2.x: task directories are <DefaultStateDir>/<namespace>/<id>.
const DefaultStateDir = "/run/containerd/io.containerd.runtime.v2.task"

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

// shimBinaryPathFile is what containerd ≥ 1.6 writes in a task directory
// when the runtime has a runtime_path: the shim binary.
const shimBinaryPathFile = "shim-binary-path"

// GCOptions configures GC.
type GCOptions struct {
	// StateDir is containerd's runtime v2 task state directory; "" means
	// DefaultStateDir.
	StateDir string
	// RuncRoot is where runc keeps its state (<root>/<ns>/<id>) for the
	// residue scan, besides every root named by a task's options.json;
	// "" means bundle.DefaultRuncRoot.
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

// Failed reports whether a delete run by gc did not end in ResultDeleted,
// or the state directory could not be read.
func (g *GCReport) Failed() bool {
	if g.unreadable {
		return true
	}
	for _, t := range g.Tasks {
		if t.Action == GCFailed {
			return true
		}
	}
	return false
}

// GC finds the orphaned runc v2 task directories under the state directory
// in every namespace (or opts.Namespace) and deletes each with deletion.Delete, as
// containerd would have: an orphan's shim is dead (its socket is missing or
// refuses connections, no shim process runs for the task, and the
// container's verified init is not a shim's child) and its task directory
// is older than opts.OlderThan by its mtime (and, without a recorded shim
// socket, older than CreationWindow). A task whose shim answers, or whose
// liveness cannot be ruled out, is never touched. Directories that are not
// task directories (bundle.CheckTaskDir: a mistaken state directory's
// <dir>/<x>/<y>) or not recognisably runc v2's (see runcEvidence) are left
// (status skipped), and so said.
//
// It first looks at every task directory (namespaces and ids in name
// order), then runs the orphans' deletes, opts.Parallel at a time,
// reporting each end to opts.Progress. The report lists the tasks in the
// order they were looked at, whatever the order in which deletes end.
//
// After the deletes it scans for residue outside task directories that it
// can attribute to a dead task (runc state, cgroups, containerd's
// half-done removals) and reports it without touching it.
//
// With opts.DryRun it only reads: the report says what it would delete and
// why. GC never returns an error: what went wrong is in the report (see
// GCReport.Failed).
func GC(ctx context.Context, opts GCOptions) *GCReport {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.RuncRoot == "" {
		opts.RuncRoot = bundle.DefaultRuncRoot
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
	r.sweep(ctx)
	r.scanResidue()
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

// sweepMountsMaxAge is how old the mount table a sweep's deletes share may
// be. Each delete confirms every mount point on the live system before it
// removes anything (a mount made after the reading is left in place and
// reported, and the next sweep takes it down), so the age bounds only how
// long such a mount can wait, never what is removed.
const sweepMountsMaxAge = time.Second

func (g *GCReport) problem(err error) { g.Problems = append(g.Problems, err.Error()) }

// sweep walks <state>/<ns>/<id>, lists every task directory in order and
// deletes the orphans (deleteAll).
func (r *gcRun) sweep(ctx context.Context) {
	nss, err := readDirNames(r.stateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			r.g.problem(fmt.Errorf("state directory %s does not exist: no task to look at", r.stateDir))
			return
		}
		r.g.unreadable = true
		r.g.problem(fmt.Errorf("read state directory: %w", err))
		return
	}
	r.prober = liveness.NewProber()
	var orphans []int // indexes in r.g.Tasks of the tasks to delete
	defer func() { r.deleteAll(ctx, orphans) }()
	for _, ns := range nss {
		if r.opts.Namespace != "" && ns != r.opts.Namespace {
			continue
		}
		if err := bundle.ValidateNamespace(ns); err != nil {
			r.g.problem(fmt.Errorf("%s: not a namespace, left: %w", filepath.Join(r.stateDir, ns), err))
			continue
		}
		r.namespaces[ns] = true
		ids, err := readDirNames(filepath.Join(r.stateDir, ns))
		if err != nil {
			r.g.problem(fmt.Errorf("read namespace %s: %w", ns, err))
			continue
		}
		for _, id := range ids {
			if ctx.Err() != nil {
				r.g.problem(fmt.Errorf("gc stopped: %w", ctx.Err()))
				return
			}
			t, ok := r.task(ns, id)
			if !ok {
				continue
			}
			t.AgeSeconds = t.Age.Seconds()
			if t.Status == GCOrphan && !r.opts.DryRun {
				orphans = append(orphans, len(r.g.Tasks))
			}
			r.g.Tasks = append(r.g.Tasks, t)
		}
	}
}

// task looks at one entry of a namespace directory: ok is false when it is
// not a task directory but containerd's half-done removal (residue). It
// deletes nothing: an orphan's delete is deleteAll's.
func (r *gcRun) task(ns, name string) (t GCTask, ok bool) {
	path := filepath.Join(r.stateDir, ns, name)
	if removing, ok := strings.CutPrefix(name, "."); ok && bundle.ValidateID(removing) == nil {
		r.g.Residue = append(r.g.Residue, GCResidue{
			Kind: ResiduePartialRemoval, Namespace: ns, ID: removing, Paths: []string{path},
			Detail: "containerd renamed this task directory for removal and did not finish (it may hold a mount): look before removing it",
		})
		return t, false
	}
	t = GCTask{Namespace: ns, ID: name, Path: path, Status: GCSkipped, Action: GCLeft}
	fi, err := os.Lstat(path)
	switch {
	case err != nil:
		t.Why = fmt.Sprintf("cannot stat: %v", err)
		return t, true
	case !fi.IsDir():
		t.Why = "not a directory"
		return t, true
	}
	t.Age, t.mtime = time.Since(fi.ModTime()), fi.ModTime()
	if err := bundle.ValidateID(name); err != nil {
		t.Why = err.Error()
		return t, true
	}
	// The delete checks it again under its lock (deletion's resolve step);
	// here it keeps a mistaken state directory's <dir>/<x>/<y> out of the
	// report's orphans and out of the deletes.
	if _, err := bundle.CheckTaskDir(path, ns, name); err != nil {
		t.Why = err.Error()
		return t, true
	}
	b, err := bundle.Load(path, ns, name)
	if err != nil {
		t.Why = err.Error()
		return t, true
	}
	r.roots[b.RuncRoot] = true
	if ok, why := runcEvidence(path, b); !ok {
		t.Why = why
		return t, true
	}
	st := r.prober.Probe(b)
	if st.Alive {
		t.Status, t.Why = GCLive, "shim alive: "+st.Why
		return t, true
	}
	t.address = b.Address
	if t.Age > r.g.OldestOrphan {
		r.g.OldestOrphan = t.Age
	}
	if t.Age < r.opts.OlderThan {
		t.Status = GCYoung
		t.Why = fmt.Sprintf("shim dead (%s), but younger than %s", st.Why, r.opts.OlderThan)
		return t, true
	}
	if t.Age < CreationWindow && b.Address == "" {
		t.Status = GCYoung
		t.Why = fmt.Sprintf("no shim socket recorded yet and younger than %s: containerd may still be creating it", CreationWindow)
		return t, true
	}
	t.Status, t.Why = GCOrphan, "shim dead: "+st.Why
	if r.opts.DryRun {
		t.Action = GCWouldDelete
	}
	return t, true
}

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

// delete deletes one orphan, unless it changed since the sweep looked at
// it (recheck), and records the delete in t and in the metrics; the error
// is the metrics'.
func (r *gcRun) delete(ctx context.Context, t *GCTask) error {
	if why := r.recheck(t); why != "" {
		t.Why += "; not deleted: " + why
		return nil
	}
	rep, err := deletion.Delete(ctx, deletion.Request{Namespace: t.Namespace, ID: t.ID, Bundle: t.Path, Mounts: r.mounts})
	rec := NewDeleteRecord(rep, err, "", TriggerGC)
	t.Delete, t.report = &rec, rep
	switch {
	case errors.Is(err, deletion.ErrShimAlive):
		// The shim came alive (or hung) after the recheck: the delete
		// refused under the task directory's lock, having touched nothing.
		t.Action = GCLeft
		t.Why += "; not deleted: " + err.Error()
	case rec.Result != ResultDeleted:
		t.Action = GCFailed
	default:
		t.Action = GCDeleted
	}
	return r.opts.Metrics.RecordDelete(rec)
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

// runcEvidence says whether a task directory is recognisably runc v2's: a
// shim-binary-path naming a containerd-shim-runc-v2* binary, or (without
// one) a `runtime` or options.json file, or runc state for the task. A
// shim-binary-path naming another shim rules it out.
func runcEvidence(path string, b *bundle.Bundle) (bool, string) {
	if data, err := readSmallFile(filepath.Join(path, shimBinaryPathFile)); err == nil {
		name := filepath.Base(strings.TrimSpace(string(data)))
		if strings.HasPrefix(name, "containerd-shim-runc-v2") {
			return true, ""
		}
		return false, fmt.Sprintf("%s names %.100q, not a runc v2 shim", shimBinaryPathFile, name)
	}
	for _, f := range []string{bundle.RuntimeFile, bundle.OptionsFile} {
		if _, err := os.Lstat(filepath.Join(path, f)); err == nil {
			return true, ""
		}
	}
	if b.State != nil {
		return true, ""
	}
	if _, err := os.Lstat(b.StateDir); err == nil {
		return true, ""
	}
	return false, "no runtime, options.json, shim-binary-path or runc state: not recognisably a runc v2 task (delete it by hand if it is one)"
}

// readSmallFile reads a small regular file without following a symlink.
func readSmallFile(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// readDirNames lists the names of the entries of dir, sorted.
func readDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

// taskExists reports whether ns/id has a task directory.
func (r *gcRun) taskExists(ns, id string) bool {
	_, err := os.Lstat(filepath.Join(r.stateDir, ns, id))
	return err == nil
}

// scanResidue reports runc state and cgroups of tasks without a task
// directory whose processes no shim owns.
func (r *gcRun) scanResidue() {
	if r.prober == nil {
		r.prober = liveness.NewProber()
	}
	roots := make([]string, 0, len(r.roots))
	for root := range r.roots {
		roots = append(roots, root)
	}
	sort.Strings(roots)
	for _, root := range roots {
		r.scanRuncRoot(root)
	}
	r.scanCgroups()
	r.scanSystemdScopes()
}

// runcStateFile is the part of runc's state.json the residue scan reads.
type runcStateFile struct {
	ID        string `json:"id"`
	InitPid   int    `json:"init_process_pid"`
	InitStart uint64 `json:"init_process_start"`
}

func (r *gcRun) scanRuncRoot(root string) {
	nss, err := readDirNames(root)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.g.problem(fmt.Errorf("read runc root: %w", err))
		}
		return
	}
	for _, ns := range nss {
		if (r.opts.Namespace != "" && ns != r.opts.Namespace) || bundle.ValidateNamespace(ns) != nil {
			continue
		}
		r.namespaces[ns] = true
		ids, err := readDirNames(filepath.Join(root, ns))
		if err != nil {
			continue // not a directory, or gone
		}
		for _, id := range ids {
			if bundle.ValidateID(id) != nil || r.taskExists(ns, id) {
				continue
			}
			dir := filepath.Join(root, ns, id)
			if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
				continue
			}
			detail := "no task directory"
			data, err := readSmallFile(filepath.Join(dir, "state.json"))
			var st runcStateFile
			switch {
			case err != nil:
				detail += fmt.Sprintf("; state.json unreadable: %v", err)
			case json.Unmarshal(data, &st) != nil:
				detail += "; state.json is not JSON"
			case st.InitPid > 0:
				ps, err := liveness.ReadStat(st.InitPid)
				switch {
				case err != nil || ps.Exited() || ps.Start != st.InitStart:
					detail += fmt.Sprintf("; init %d gone", st.InitPid)
				case r.prober.ShimPid(ps.PPid, "") > 0:
					continue // a live task of another state directory
				default:
					detail += fmt.Sprintf("; init %d alive without a shim", st.InitPid)
				}
			}
			r.g.Residue = append(r.g.Residue, GCResidue{Kind: ResidueRuncState, Namespace: ns, ID: id, Paths: []string{dir}, Detail: detail})
		}
	}
}

// scanCgroups looks for /<ns>/<id> in every cgroup hierarchy (runc's
// cgroupfs path for containerd's default spec) for the namespaces seen.
func (r *gcRun) scanCgroups() {
	mounts, err := cgroups.Hierarchies()
	if err != nil {
		r.g.problem(fmt.Errorf("cgroup residue: %w", err))
		return
	}
	nss := make([]string, 0, len(r.namespaces))
	for ns := range r.namespaces {
		nss = append(nss, ns)
	}
	sort.Strings(nss)
	type key struct{ ns, id string }
	found := map[key][]string{}
	var order []key
	for _, mp := range mounts {
		for _, ns := range nss {
			ids, err := readDirNames(filepath.Join(mp, ns))
			if err != nil {
				continue
			}
			for _, id := range ids {
				dir := filepath.Join(mp, ns, id)
				if bundle.ValidateID(id) != nil || r.taskExists(ns, id) {
					continue
				}
				if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
					continue
				}
				k := key{ns, id}
				if _, ok := found[k]; !ok {
					order = append(order, k)
				}
				found[k] = append(found[k], dir)
			}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].ns != order[j].ns {
			return order[i].ns < order[j].ns
		}
		return order[i].id < order[j].id
	})
next:
	for _, k := range order {
		pids, errs := (&cgroups.Set{Dirs: found[k]}).Procs()
		if len(errs) > 0 {
			continue // not a cgroup a dead task can own (e.g. it holds this process)
		}
		for _, pid := range pids {
			if ps, err := liveness.ReadStat(pid); err == nil && r.prober.ShimPid(ps.PPid, "") > 0 {
				continue next // a live task of another state directory
			}
		}
		r.g.Residue = append(r.g.Residue, GCResidue{
			Kind: ResidueCgroup, Namespace: k.ns, ID: k.id, Paths: found[k],
			Detail: fmt.Sprintf("no task directory; %d processes in it", len(pids)),
		})
	}
}

// JSON is the report as indented JSON, newline-terminated.
func (g *GCReport) JSON() []byte {
	data, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return []byte(fmt.Sprintf("{\"error\":%q}\n", err.Error()))
	}
	return append(data, '\n')
}

// Text is the report for a person: a summary line, one line per task
// directory (with the delete's short report under each delete), the
// residue and the problems.
func (g *GCReport) Text() string {
	var b strings.Builder
	mode := ""
	if g.DryRun {
		mode = " (dry run: nothing changed)"
	}
	fmt.Fprintf(&b, "gc %s%s: ", g.StateDir, mode)
	if g.DryRun {
		fmt.Fprintf(&b, "%d would be deleted", g.Summary[string(GCWouldDelete)])
	} else {
		fmt.Fprintf(&b, "%d deleted, %d failed", g.Summary[string(GCDeleted)], g.Summary[string(GCFailed)])
	}
	fmt.Fprintf(&b, "; %d live, %d younger than %s, %d skipped; %d residue; in %s\n",
		g.Summary[string(GCLive)], g.Summary[string(GCYoung)], time.Duration(g.OlderThanSeconds*float64(time.Second)),
		g.Summary[string(GCSkipped)], len(g.Residue), roundDuration(g.DurationSeconds))
	if g.StateDirNote != "" {
		fmt.Fprintf(&b, "  note: %s (from %s)\n", g.StateDirNote, g.StateDirFrom)
	}
	for _, t := range g.Tasks {
		label := string(t.Action)
		if t.Action == GCLeft {
			label = "left (" + string(t.Status) + ")"
		}
		fmt.Fprintf(&b, "  %-14s %s/%s (age %s): %s\n", label, t.Namespace, t.ID, t.Age.Round(time.Second), t.Why)
		if t.report != nil {
			for _, line := range strings.Split(strings.TrimRight(t.report.Text(), "\n"), "\n") {
				fmt.Fprintf(&b, "      %s\n", line)
			}
			if t.Delete != nil && t.Delete.Error != "" {
				fmt.Fprintf(&b, "      error: %s\n", t.Delete.Error)
			}
		}
	}
	if len(g.Residue) > 0 {
		b.WriteString("residue outside task directories (reported only, nothing deleted):\n")
		for _, r := range g.Residue {
			paths := strings.Join(r.Paths, " ")
			if len(r.Paths) > 2 {
				paths = fmt.Sprintf("%s and %d more", r.Paths[0], len(r.Paths)-1)
			}
			fmt.Fprintf(&b, "  %-15s %s/%s: %s (%s)\n", r.Kind, r.Namespace, r.ID, r.Detail, paths)
		}
	}
	for _, p := range g.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	return b.String()
}

package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
)

// DefaultStateDir is containerd's runtime v2 task state directory with the
// default configuration (state = "/run/containerd"), in containerd 1.6, 1.7
// and 2.x: task directories are <DefaultStateDir>/<namespace>/<id>.
const DefaultStateDir = "/run/containerd/io.containerd.runtime.v2.task"

// DefaultOlderThan is gc's default age threshold: a task directory whose
// mtime is younger may be one containerd is still creating or deleting.
const DefaultOlderThan = 5 * time.Minute

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
}

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
var ResidueKinds = []string{ResidueRuncState, ResidueCgroup, ResiduePartialRemoval}

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
	StateDir         string    `json:"state_dir"`
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
// is older than opts.OlderThan by its mtime. A task whose shim answers, or
// whose liveness cannot be ruled out, is never touched. Task directories
// that are not recognisably runc v2 (see runcEvidence) are left.
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
	g := &GCReport{
		StateDir:         stateDir,
		Namespace:        opts.Namespace,
		OlderThanSeconds: opts.OlderThan.Seconds(),
		DryRun:           opts.DryRun,
		Started:          time.Now(),
		Tasks:            []GCTask{},
		Residue:          []GCResidue{},
		Problems:         []string{},
	}
	r := &gcRun{opts: opts, g: g, stateDir: stateDir, roots: map[string]bool{opts.RuncRoot: true}, namespaces: map[string]bool{}}
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
}

func (g *GCReport) problem(err error) { g.Problems = append(g.Problems, err.Error()) }

// sweep walks <state>/<ns>/<id> and deletes the orphans.
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
			r.task(ctx, ns, id)
		}
	}
}

// task looks at one entry of a namespace directory and deletes it when it
// is an orphan.
func (r *gcRun) task(ctx context.Context, ns, name string) {
	path := filepath.Join(r.stateDir, ns, name)
	if removing, ok := strings.CutPrefix(name, "."); ok && bundle.ValidateID(removing) == nil {
		r.g.Residue = append(r.g.Residue, GCResidue{
			Kind: ResiduePartialRemoval, Namespace: ns, ID: removing, Paths: []string{path},
			Detail: "containerd renamed this task directory for removal and did not finish (it may hold a mount): look before removing it",
		})
		return
	}
	t := GCTask{Namespace: ns, ID: name, Path: path, Status: GCSkipped, Action: GCLeft}
	defer func() {
		t.AgeSeconds = t.Age.Seconds()
		r.g.Tasks = append(r.g.Tasks, t)
	}()
	fi, err := os.Lstat(path)
	switch {
	case err != nil:
		t.Why = fmt.Sprintf("cannot stat: %v", err)
		return
	case !fi.IsDir():
		t.Why = "not a directory"
		return
	}
	t.Age = time.Since(fi.ModTime())
	if err := bundle.ValidateID(name); err != nil {
		t.Why = err.Error()
		return
	}
	b, err := bundle.Load(path, ns, name)
	if err != nil {
		t.Why = err.Error()
		return
	}
	r.roots[b.RuncRoot] = true
	if ok, why := runcEvidence(path, b); !ok {
		t.Why = why
		return
	}
	st := r.prober.Probe(b)
	if st.Alive {
		t.Status, t.Why = GCLive, "shim alive: "+st.Why
		return
	}
	if t.Age > r.g.OldestOrphan {
		r.g.OldestOrphan = t.Age
	}
	if t.Age < r.opts.OlderThan {
		t.Status = GCYoung
		t.Why = fmt.Sprintf("shim dead (%s), but younger than %s", st.Why, r.opts.OlderThan)
		return
	}
	t.Status, t.Why = GCOrphan, "shim dead: "+st.Why
	if r.opts.DryRun {
		t.Action = GCWouldDelete
		return
	}
	rep, err := deletion.Delete(ctx, deletion.Request{Namespace: ns, ID: name, Bundle: path})
	rec := NewDeleteRecord(rep, err, "", TriggerGC)
	t.Delete, t.report = &rec, rep
	t.Action = GCDeleted
	if rec.Result != ResultDeleted {
		t.Action = GCFailed
	}
	if err := r.opts.Metrics.RecordDelete(rec); err != nil {
		r.g.problem(err)
	}
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

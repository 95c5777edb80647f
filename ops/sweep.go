package ops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// sweep walks <state>/<ns>/<id> and lists every task directory in order
// in the report, each classified (task); it deletes nothing. It returns
// the orphans to delete: their indexes in r.g.Tasks (none in a dry run).
// When ctx ends it stops looking, says so in the report's problems, and
// returns the orphans found so far.
func (r *gcRun) sweep(ctx context.Context) (orphans []int) {
	nss, err := readDirNames(r.stateDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			r.g.problem(fmt.Errorf("state directory %s does not exist: no task to look at", r.stateDir))
			return nil
		}
		r.g.unreadable = true
		r.g.problem(fmt.Errorf("read state directory: %w", err))
		return nil
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
				return orphans
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
	return orphans
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

// runcEvidence says whether a task directory is recognisably runc v2's: a
// shim-binary-path naming a containerd-shim-runc-v2* binary, or (without
// one that bundle.ReadShimBinaryPath, through Load, could read) a `runtime`
// or options.json file, or runc state for the task. A shim-binary-path
// naming another shim rules it out.
func runcEvidence(path string, b *bundle.Bundle) (bool, string) {
	if b.ShimBinaryPath != "" {
		name := filepath.Base(b.ShimBinaryPath)
		if strings.HasPrefix(name, "containerd-shim-runc-v2") {
			return true, ""
		}
		return false, fmt.Sprintf("%s names %.100q, not a runc v2 shim", bundle.ShimBinaryPathFile, name)
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

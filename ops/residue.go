package ops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

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

// scanRuncRoot reports runc state directories <root>/<ns>/<id> of tasks
// without a task directory, read with bundle.ReadRuncState; one whose
// init is alive and a shim's child is a live task of another state
// directory, not residue.
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
			st, err := bundle.ReadRuncState(root, ns, id)
			switch {
			case err != nil:
				detail += fmt.Sprintf("; state.json unreadable: %v", err)
			case st.InitProcessPid > 0:
				ps, err := liveness.ReadStat(st.InitProcessPid)
				switch {
				case err != nil || ps.Exited() || ps.Start != st.InitProcessStartTime:
					detail += fmt.Sprintf("; init %d gone", st.InitProcessPid)
				case r.prober.ShimPid(ps.PPid, "") > 0:
					continue // a live task of another state directory
				default:
					detail += fmt.Sprintf("; init %d alive without a shim", st.InitProcessPid)
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

package ops

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/systemdunit"
)

// ResidueSystemdScope: a container scope of runc's systemd driver as CRI
// names it, cri-containerd-<id>.scope — its cgroup under kubepods.slice in
// any hierarchy, or the unit still loaded in systemd — for an id that has
// no task directory in any namespace, none of whose processes is a shim's
// child. Reported in CRI's namespace (CRIScopeNamespace).
const ResidueSystemdScope = "systemd_scope"

// CRIScopeNamespace is the namespace systemd scope residue is reported
// in: CRI's, whose containers the cri-containerd- prefix names.
const CRIScopeNamespace = "k8s.io"

// criScopePrefix and criScopeSuffix frame the container id in the scope
// unit CRI's cgroupsPath "<pod slice>:cri-containerd:<id>" makes runc create.
const (
	criScopePrefix = "cri-containerd-"
	criScopeSuffix = ".scope"
	kubepodsSlice  = "kubepods.slice"
	// kubepodsDepth bounds the walk below kubepods.slice: QoS slice, pod
	// slice, scope.
	kubepodsDepth = 3
)

// scanSystemdScopes reports cri-containerd-<id>.scope residue: scope
// cgroups under kubepods.slice in every hierarchy, and scope units systemd
// still has loaded (also with no cgroup left: a unit systemd kept
// "active" after its cgroup was removed behind its back), for ids with no
// task directory. It reads only: nothing is stopped or removed.
func (r *gcRun) scanSystemdScopes() {
	if r.opts.Namespace != "" && r.opts.Namespace != CRIScopeNamespace {
		return
	}
	if r.prober == nil {
		r.prober = liveness.NewProber()
	}
	ids := r.taskIDs()
	found := map[string][]string{} // id -> cgroup dirs
	mounts, err := cgroups.Hierarchies()
	if err != nil {
		r.g.problem(fmt.Errorf("systemd scope residue: %w", err))
		return
	}
	for _, mp := range mounts {
		root := filepath.Join(mp, kubepodsSlice)
		_ = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
			if err != nil || !e.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			depth := 0
			if rel != "." {
				depth = strings.Count(rel, string(filepath.Separator)) + 1
			}
			name := e.Name()
			if id, ok := scopeID(name); ok && depth > 0 {
				if !ids[id] {
					found[id] = append(found[id], p)
				}
				return filepath.SkipDir
			}
			if depth >= kubepodsDepth {
				return filepath.SkipDir
			}
			return nil
		})
	}

	units := map[string]systemdunit.UnitStatus{}
	list, unchecked, err := systemdunit.List(context.Background(), []string{criScopePrefix + "*" + criScopeSuffix}, 0)
	switch {
	case err != nil:
		r.g.problem(fmt.Errorf("systemd scope residue: %w", err))
	case unchecked == "":
		for _, u := range list {
			if id, ok := scopeID(u.Name); ok && !ids[id] && u.LoadState != "not-found" {
				units[id] = u
			}
		}
	}

	all := make([]string, 0, len(found)+len(units))
	for id := range found {
		all = append(all, id)
	}
	for id := range units {
		if _, ok := found[id]; !ok {
			all = append(all, id)
		}
	}
	sort.Strings(all)
next:
	for _, id := range all {
		dirs := found[id]
		var pids []int
		if len(dirs) > 0 {
			var errs []error
			pids, errs = (&cgroups.Set{Dirs: dirs}).Procs()
			if len(errs) > 0 {
				continue // not a cgroup a dead task can own
			}
			for _, pid := range pids {
				if ps, err := liveness.ReadStat(pid); err == nil && r.prober.ShimPid(ps.PPid, "") > 0 {
					continue next // a live task of another state directory
				}
			}
		}
		detail := fmt.Sprintf("no task directory; %d processes", len(pids))
		if len(dirs) == 0 {
			detail = "no task directory; no cgroup"
		}
		switch u, ok := units[id]; {
		case ok:
			detail += fmt.Sprintf("; unit %s %s/%s", u.Name, u.LoadState, u.ActiveState)
		case unchecked != "":
			detail += "; " + unchecked
		default:
			detail += "; unit " + criScopePrefix + id + criScopeSuffix + " not loaded"
		}
		if dirs == nil {
			dirs = []string{}
		}
		r.g.Residue = append(r.g.Residue, GCResidue{
			Kind: ResidueSystemdScope, Namespace: CRIScopeNamespace, ID: id, Paths: dirs, Detail: detail,
		})
	}
}

// scopeID is the container id of a CRI scope unit name, when name is one.
func scopeID(name string) (string, bool) {
	if !strings.HasPrefix(name, criScopePrefix) || !strings.HasSuffix(name, criScopeSuffix) {
		return "", false
	}
	id := strings.TrimSuffix(strings.TrimPrefix(name, criScopePrefix), criScopeSuffix)
	if bundle.ValidateID(id) != nil {
		return "", false
	}
	return id, true
}

// taskIDs is every id that has a task directory, in any namespace.
func (r *gcRun) taskIDs() map[string]bool {
	ids := map[string]bool{}
	nss, err := readDirNames(r.stateDir)
	if err != nil {
		return ids
	}
	for _, ns := range nss {
		names, err := readDirNames(filepath.Join(r.stateDir, ns))
		if err != nil {
			continue
		}
		for _, id := range names {
			ids[id] = true
		}
	}
	return ids
}

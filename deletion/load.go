package deletion

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
)

// load is the step "load" (see Delete): every file of the task directory and runc's state,
// best-effort. Each problem is reported; none stops the delete.
func (d *deletion) load(ctx context.Context, s *StepReport) {
	b, err := bundle.Load(d.path, d.req.Namespace, d.req.ID)
	if err != nil {
		// Load fails only on what resolve already validated.
		s.fail(err)
		b = &bundle.Bundle{Path: d.path, Namespace: d.req.Namespace, ID: d.req.ID, Missing: true}
	}
	d.b = b
	var missing []string
	for _, p := range b.Problems {
		if errors.Is(p.Err, fs.ErrNotExist) {
			missing = append(missing, p.What)
			continue
		}
		s.problem(p)
	}
	if len(missing) > 0 && !b.Missing {
		s.problem(fmt.Errorf("missing: %s", strings.Join(missing, ", ")))
	}
	switch {
	case b.Exit != nil:
		// containerd 2.4's shim saw the init exit: its status, not ours.
		d.rep.Pid, d.rep.ExitStatus, d.rep.ExitedAt, d.rep.ExitRecorded = b.Exit.Pid, b.Exit.Status, b.Exit.Timestamp, true
	case b.State != nil:
		d.rep.Pid = b.State.InitProcessPid
	case b.InitPid > 0:
		d.rep.Pid = b.InitPid
	}
	ev := evidence(b)
	// A table that cannot be read is nil: FindEach then tries once more,
	// and reports.
	mt, _ := d.req.Mounts.Get()
	d.loadMounts = mt
	sets, errs := cgroups.FindEach(mt, ev.cgroups, ev.check, ev.state)
	set, setErrs := sets[0], errs[0]
	if err := d.stateIsBundles(b, ev, sets[1], sets[2]); err != nil {
		// A runc state that is not this task directory's, or whose
		// cgroups are not the bundle's, names another container (or is
		// forged): it proves nothing, and neither it nor the runtime
		// (which would act on it) is used.
		s.problem(err)
		d.stateUntrusted = true
		if label, ok := b.State.Config.Label("bundle"); ok && !sameDir(label, d.path) {
			if _, err := os.Lstat(label); err == nil {
				d.foreignState = label
			}
		}
		b.State = nil
		sets, errs := cgroups.FindEach(mt, evidence(b).cgroups)
		set, setErrs = sets[0], errs[0]
	}
	d.cgroups = set
	for _, e := range setErrs {
		s.problem(fmt.Errorf("cgroups: %w", e))
	}
	if s.Outcome == "" {
		s.done("")
	}
}

// stateIsBundles checks that runc's state is this task's before anything
// is done on its say-so: runc's "bundle=" label (the bundle runc created
// the container from) must name the task directory, and its cgroups must
// be the bundle's. Those are the directories config.json's cgroupsPath
// maps to (ev.check, stateMatchesBundle) when it is absolute or in systemd
// form; a relative cgroupsPath (ev.relative) must end every cgroup path of the state
// (runc joined it to the cgroup it ran in); with no usable cgroupsPath
// (config.json missing or corrupt) every cgroup path must end in the id,
// as containerd ("/<ns>/<id>"), CRI ("/kubepods/.../<id>", systemd
// "...:cri-containerd:<id>" → "cri-containerd-<id>.scope") and docker
// name them. nil when there is no state.
func (d *deletion) stateIsBundles(b *bundle.Bundle, ev containerEvidence, fromSpec, fromState *cgroups.Set) error {
	if b.State == nil {
		return nil
	}
	label, ok := b.State.Config.Label("bundle")
	switch {
	case !ok:
		return errors.New("runc state: no bundle label: cannot tell it is this container's, not used")
	case !sameDir(label, d.path):
		return fmt.Errorf("runc state: its bundle %s is not this task directory %s: the state is not this container's, not used", label, d.path)
	}
	if path := ev.check.CgroupsPath; path != "" && len(fromSpec.Dirs) > 0 {
		return stateMatchesBundle(path, fromSpec, fromState)
	}
	rel := ev.relative
	for i, cg := range fromState.CgroupPaths() {
		switch {
		case cg == "":
			continue
		case rel != "" && !strings.HasSuffix(cg, "/"+rel):
			return fmt.Errorf("runc state: its cgroup %s (%s) does not end in config.json's relative cgroupsPath %q: the state is not this container's, not used", fromState.Dirs[i], cg, rel)
		case rel == "" && !namedForID(cg, b.ID):
			return fmt.Errorf("runc state: its cgroup %s (%s) is not named for container %s, and config.json gives no cgroupsPath to compare: the state is not this container's, not used", fromState.Dirs[i], cg, b.ID)
		}
	}
	return nil
}

// namedForID reports whether a cgroup path's last element names the
// container id: "<id>" (cgroupfs: containerd's "/<ns>/<id>", CRI's
// "/kubepods/<qos>/pod<uid>/<id>", docker's "/docker/<id>") or
// "<prefix>-<id>.scope" (runc's systemd driver: "cri-containerd-<id>.scope",
// "docker-<id>.scope").
func namedForID(cg, id string) bool {
	base := pathpkg.Base(cg)
	return base == id || strings.HasSuffix(base, "-"+id+".scope")
}

// sameDir reports whether two absolute paths name the same directory: the
// same string once cleaned, or the same inode (the label was written
// through another path to it, e.g. /var/run for /run).
func sameDir(a, b string) bool {
	if !filepath.IsAbs(a) {
		return false
	}
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && sa.IsDir() && os.SameFile(sa, sb)
}

// stateMatchesBundle checks runc's state against the bundle containerd
// wrote: the cgroups of runc's state (fromState) must be among the
// directories config.json's cgroupsPath maps to (fromSpec). runc derives
// one from the other, so they differ only when the state is not this
// container's. Nothing to compare (no path, or either side found nothing)
// passes.
func stateMatchesBundle(path string, fromSpec, fromState *cgroups.Set) error {
	if path == "" || len(fromSpec.Dirs) == 0 || len(fromState.Dirs) == 0 {
		return nil
	}
	if d := fromSpec.Outside(fromState); d != "" {
		return fmt.Errorf("runc state: its cgroup %s is not one of the bundle's (cgroupsPath %q): the state is not this container's, not used", d, path)
	}
	return nil
}

package deletion

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// StepSandbox is the step that deletes the containers that died with a
// sandbox's shim.
const StepSandbox = "sandbox"

// startSandboxTasks is the delete path's part for a sandbox task on
// containerd 2.x. The containers of a pod join their sandbox's shim: their
// task directories hold a `sandbox` file naming the sandbox and a
// bootstrap.json naming the same socket. When that shim dies, containerd
// 2.0 to 2.3 run delete for the sandbox only (core/runtime/v2
// shim_manager.go attaches a joined container with a no-op on disconnect;
// 2.4 runs cleanupAfterDeadShim for each), so the containers' processes,
// cgroups, runc state and task directories would leak. Each such container
// is deleted by the same delete path, beside the rest of this one, when its
// shim is proven dead: same socket as this task's, and package liveness
// finds it dead, and only when this delete's own question to the shim
// (step shim) found it dead or hung: a shim that answers serves them. On
// 2.4, containerd's own delete of the same container waits on its task
// directory's lock and then finds it gone.
//
// It returns a function that waits for those deletes and records the step;
// it starts nothing (and records no step) for a task that is not a CRI
// sandbox (config.json's annotation; CRI is what groups containers into
// their sandbox's shim, and the check keeps every other delete from
// reading its neighbours), for a delete that is itself one of these, or
// when the task has no socket address to compare.
func (d *deletion) startSandboxTasks(ctx context.Context) (wait func()) {
	if d.req.sandboxMember || d.b.Missing || d.b.Address == "" || !d.isCRISandbox() {
		return func() {}
	}
	if v := d.answer.Verdict; v != liveness.ShimDead && v != liveness.ShimHung {
		// Only a shim the step "shim" found dead or hung has taken its
		// containers with it: one that answers still serves them.
		return func() {}
	}
	members, passed := d.sandboxMembers()
	if len(members) == 0 && len(passed) == 0 {
		return func() {}
	}
	start := time.Now()
	type result struct {
		id  string
		rep *Report
		err error
	}
	results := make([]result, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := Delete(ctx, Request{
				Namespace: d.req.Namespace, ID: m.ID, Bundle: m.Path,
				LiveShim: d.req.LiveShim, sandboxMember: true, Mounts: d.req.Mounts, Prober: d.req.Prober,
			})
			results[i] = result{m.ID, rep, err}
		}()
	}
	return func() {
		wg.Wait()
		s := StepReport{Step: StepSandbox}
		for _, p := range passed {
			s.problem(errors.New(p))
		}
		for _, r := range results {
			switch {
			case r.err != nil:
				s.fail(fmt.Errorf("container task %s of this sandbox: %w", r.id, r.err))
			case r.rep.Failed():
				s.fail(fmt.Errorf("container task %s of this sandbox: not fully deleted: %s", r.id, r.rep.Text()))
			default:
				s.done("deleted container task " + r.id + " of this sandbox (its shim died with the sandbox's)")
			}
		}
		s.Duration = time.Since(start)
		d.rep.Steps = append(d.rep.Steps, s)
	}
}

// sandboxMembers lists the task directories beside this one that belong to
// this sandbox and whose shim is proven dead: `sandbox` names this task,
// the socket address is this task's, and package liveness calls the shim
// dead. Anything unreadable, a symlink, or not a valid id is passed over;
// a task naming this sandbox that fails the other checks is passed over
// too, and passed says why.
func (d *deletion) sandboxMembers() (members []*bundle.Bundle, passed []string) {
	nsDir := filepath.Dir(d.path)
	entries, err := os.ReadDir(nsDir)
	if err != nil {
		return nil, nil
	}
	for _, e := range entries {
		name := e.Name()
		if name == d.req.ID || !e.IsDir() || bundle.ValidateID(name) != nil {
			continue // e.IsDir is false for a symlink: never followed
		}
		p := filepath.Join(nsDir, name)
		if sb, err := bundle.ReadSandbox(p); err != nil || sb != d.req.ID {
			continue
		}
		b, err := bundle.Load(p, d.req.Namespace, name)
		switch {
		case err != nil:
			passed = append(passed, fmt.Sprintf("container task %s of this sandbox left: %v", name, err))
			continue
		case b.Address != d.b.Address:
			passed = append(passed, fmt.Sprintf("container task %s of this sandbox left: its shim address %q is not the sandbox's", name, b.Address))
			continue
		}
		if st := d.prober().Probe(b); st.Alive {
			passed = append(passed, fmt.Sprintf("container task %s of this sandbox left: its shim is alive (%s)", name, st.Why))
			continue
		}
		members = append(members, b)
	}
	members = append(members, d.strandedMembers(nsDir)...)
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	return members, passed
}

// isCRISandbox reports whether config.json says the task is a CRI pod
// sandbox.
func (d *deletion) isCRISandbox() bool {
	return d.b.Spec != nil && d.b.Spec.Annotations[containerTypeAnnotation] == "sandbox"
}

// containerTypeAnnotation is CRI's annotation of a task's role: "sandbox"
// or "container".
const containerTypeAnnotation = "io.kubernetes.cri.container-type"

// sandboxIDLabel is the annotation CRI puts on a pod's containers, which
// runc keeps in its state as a config label "key=value".
const sandboxIDLabel = "io.kubernetes.cri.sandbox-id"

// strandedMembers lists the containers of this sandbox whose task
// directory containerd already removed while their runc state, processes
// and cgroups stayed: containerd 2.0–2.3 remove a joined container's
// bundle when its shim is gone without running any delete for it. They are
// found in runc's state under this task's runc root, and proven this
// sandbox's by runc's own record: the label `bundle=<this namespace's
// state dir>/<id>` (a task of this containerd, whose directory is gone) and
// the CRI label naming this sandbox. Their processes are then killed only
// by runc's pid and start time, or cgroup membership, as for any task.
func (d *deletion) strandedMembers(nsDir string) []*bundle.Bundle {
	if d.b.RuncRoot != bundle.DefaultRuncRoot {
		// Load looks for the state of a missing task directory under the
		// default root only.
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(d.b.RuncRoot, d.req.Namespace))
	if err != nil {
		return nil
	}
	var out []*bundle.Bundle
	for _, e := range entries {
		id := e.Name()
		if id == d.req.ID || !e.IsDir() || bundle.ValidateID(id) != nil {
			continue
		}
		p := filepath.Join(nsDir, id)
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			continue // its task directory exists (or cannot be told): not stranded
		}
		b, err := bundle.Load(p, d.req.Namespace, id)
		if err != nil || b.State == nil {
			continue
		}
		sb, _ := b.State.Config.Label(sandboxIDLabel)
		dir, _ := b.State.Config.Label("bundle")
		if sb != d.req.ID || filepath.Clean(dir) != p {
			continue
		}
		if d.prober().Probe(b).Alive {
			continue
		}
		out = append(out, b)
	}
	return out
}

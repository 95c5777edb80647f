package deletion

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/failpoint"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// DefaultTimeout bounds a whole delete. containerd gives the delete command
// 5 s (io.containerd.timeout.shim.cleanup); we finish, or give up on a step,
// well inside it.
const DefaultTimeout = 4 * time.Second

// ErrUnsafe is wrapped by Delete's error when something under the bundle
// could not be made safe to delete: a mount that would not go away, or a
// proven container process that survived. Nothing under the bundle was
// removed then.
var ErrUnsafe = errors.New("task directory left in place")

// ErrShimAlive is wrapped by Delete's error when the request's LiveShim
// is RefuseLiveShim and the task's shim answers, is hung, or cannot be
// asked: nothing was touched.
var ErrShimAlive = errors.New("the task's shim is alive")

// LiveShimPolicy is what a delete does about the task's shim.
type LiveShimPolicy int

const (
	// RefuseLiveShim (gc; by hand without -force): a shim that answers,
	// is hung or cannot be asked makes the delete refuse (ErrShimAlive)
	// before it touches anything; no shim process is ever signalled.
	RefuseLiveShim LiveShimPolicy = iota
	// LeaveLiveShim (containerd's delete): a shim that answers (or cannot
	// be asked) is never signalled; the delete then does only what
	// upstream's does (shim.go). A hung shim, or a dead one whose process
	// still exists, is SIGKILLed when proven to be the task's.
	LeaveLiveShim
	// KillLiveShim (by hand with -force): the task's shim is SIGKILLed
	// when proven to be the task's, whether it answers or not.
	KillLiveShim
)

// Request names the task to delete.
type Request struct {
	Namespace string
	ID        string
	// Bundle is the task directory; "" means the working directory, or
	// the task's directory under StateDir (see TaskDir).
	Bundle string
	// StateDir is containerd's runtime v2 task state directory,
	// <containerd state>/io.containerd.runtime.v2.task
	// (bundle.TaskStateDirName; /run/containerd/io.containerd.runtime.v2.task
	// by default), where the task directory is <StateDir>/<ns>/<id>.
	// It is used only when Bundle is "" and the working directory is not
	// the task directory; "" means it is not used.
	StateDir string
	// ByContainerd says containerd runs the delete (it passes -address):
	// only then may the working directory stand for the task directory
	// (containerd runs `delete` in the bundle). By hand, StateDir wins.
	ByContainerd bool
	// Timeout bounds the whole delete; 0 means DefaultTimeout.
	Timeout time.Duration
	// sandboxMember marks the delete of a container task run by its
	// sandbox's delete (sandbox.go): it looks for no members of its own.
	sandboxMember bool
	// LiveShim says what the delete does when the task's shim answers, is
	// hung, or is dead but its process still exists (step "shim").
	// The zero value, RefuseLiveShim, is the safest.
	LiveShim LiveShimPolicy
	// Prober, when set, is the liveness.Prober shared by the deletes of
	// one sweep (gc): its one scan of /proc serves each delete's live-shim
	// check (RefuseLiveShim) and a sandbox's members. nil: the delete
	// makes one when it first needs one (never for containerd's delete of
	// a task that is not a sandbox).
	Prober *liveness.Prober
	// Mounts, when set, is the mount table shared by the deletes of one
	// sweep (gc): the delete takes its readings from it (at load, for the
	// cgroups; at unmount, for the mounts under the task directory)
	// instead of reading mountinfo, whose cost grows with every mount on
	// the host. nil: each is read afresh. Either way every mount point is
	// confirmed on the live system before anything is removed (package
	// bundle).
	Mounts *mounttable.Shared
}

// Delete is the delete path. It runs the steps below in order, each
// best-effort and idempotent, and returns the report of what each did and
// could not do. Its error says why the task directory was not taken apart:
// resolve failed (an invalid request, no evidence of a runc v2 task
// directory, its lock not had in time: nothing touched), the shim is alive
// under RefuseLiveShim (ErrShimAlive: nothing touched), or something under
// it could not be made safe (ErrUnsafe: the task directory is left).
//
// This is the one list of the delete's steps: the package documentation,
// each step's function and the README name a step (the report's Step*
// names) and point here, never number it again.
//
//  1. resolve – the task directory (Request.TaskDir): Request.Bundle, else
//     the working directory (containerd's delete only), else
//     <StateDir>/<ns>/<id>; its base name must be the id. Locked against a
//     concurrent delete of the same task, then bundle.CheckTaskDir's
//     positive evidence that it is a runc v2 task directory.
//  2. load – every file of it and runc's state, best-effort (package
//     bundle); the container's cgroups found from that evidence, and
//     runc's state used only when it is this container's.
//  3. shim – the task's shim is asked on its socket (liveness.AskShim),
//     and Request.LiveShim decides: RefuseLiveShim refuses (ErrShimAlive)
//     a shim that answers, is hung or cannot be asked, or whose process
//     still holds its socket or is the parent of the verified init
//     (liveness.Prober); LeaveLiveShim never signals one that answers (the
//     delete then does only upstream's part); KillLiveShim (-force) kills
//     it too. Otherwise a hung shim, or the process of a dead one, is
//     SIGKILLed when proven to be the task's; waited for < 1 s.
//  4. kill – every process proven to be the container's (verified init
//     via pidfd, and the cgroups); wait until gone.
//  5. sandbox – (containerd 2.x) for a sandbox task whose shim was found
//     dead or hung, the containers that joined its shim and died with it,
//     each by this same path, beside the steps below; containerd 2.0–2.3
//     never delete them.
//  6. release – the cgroups in every hierarchy and, at the same time, the
//     runtime's own `delete --force` when only it can release something
//     (poststop hooks, a systemd unit, Intel RDT, an unreadable state, a
//     surviving process), its binary and runc's state directory exist, and
//     the state is not found to be another container's (it finds a stopped
//     container: no polling); the systemd scope unit; then runc's state
//     directory if the runtime did not remove it.
//  7. unmount – everything under the task directory, deepest first.
//     unmount and remove run beside release when the runtime's delete
//     cannot read the task directory (no poststop hooks, or nothing for it
//     to delete).
//  8. remove – the task directory and its work directory, never through a
//     mount point; the dead shim's socket. Left in place (and guarded
//     against containerd's own removal) when a mount, a proven container
//     process or a live init nothing proves stayed.
//  9. respond – Report.Response is the DeleteResponse containerd expects
//     (response.go): the exit recorded in exit.json (containerd 2.4), else
//     ExitStatusKilled and the time of the delete.
func Delete(ctx context.Context, req Request) (*Report, error) {
	start := time.Now()
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	d := &deletion{req: req, rep: &Report{Namespace: req.Namespace, ID: req.ID, ExitStatus: ExitStatusKilled, ExitedAt: time.Now()}}
	defer func() { d.rep.Duration = time.Since(start) }()

	failpoint.KillAt(StepResolve)
	unlock, err := d.resolve()
	if err != nil {
		return d.rep, err
	}
	defer unlock()

	d.run(ctx, StepLoad, d.load)
	d.run(ctx, StepShim, d.shim)
	if d.refused != nil {
		return d.rep, d.refused
	}
	d.run(ctx, StepKill, d.kill)
	waitSandbox := d.startSandboxTasks(ctx)
	if d.runtimeReadsBundle() {
		d.run(ctx, StepRelease, d.release)
		d.run(ctx, StepUnmount, d.unmount)
		d.run(ctx, StepRemove, d.remove)
	} else {
		// Nothing the runtime's delete runs reads the task directory:
		// release side by side with taking the task directory apart.
		d.sideBySide = true
		d.runSideBySide(ctx,
			[]namedStep{{StepRelease, d.release}},
			[]namedStep{{StepUnmount, d.unmount}, {StepRemove, d.remove}})
	}
	waitSandbox()
	failpoint.KillAt("end")
	return d.rep, d.unsafe()
}

// Names of the delete path's steps, as they appear in the report.
const (
	StepResolve = "resolve"
	StepLoad    = "load"
	StepKill    = "kill"
	StepRelease = "release"
	StepUnmount = "unmount"
	StepRemove  = "remove"
)

// Steps lists the steps every delete that got past resolve reports, in
// order (StepShim and StepSandbox are in shim.go and sandbox.go);
// StepSandbox follows them only for a sandbox task with members.
var Steps = []string{StepResolve, StepLoad, StepShim, StepKill, StepRelease, StepUnmount, StepRemove}

// deletion is one run of the delete path: what the steps learn and hand on.
type deletion struct {
	req  Request
	rep  *Report
	path string

	b       *bundle.Bundle
	cgroups *cgroups.Set

	// survivors is set by kill when a proven container process is still
	// alive; mountsLeft by unmount. Either keeps remove from touching the
	// task directory.
	survivors  bool
	mountsLeft bool
	// sideBySide is set when release runs beside unmount and remove: the
	// runtime then gets no log file in the task directory.
	sideBySide bool
	// removeLeft is set by remove when the task directory could not be
	// removed whole.
	removeLeft bool
	// unproven is set by kill when init.pid names a live process that
	// nothing proves or disproves the container's: remove keeps the task
	// directory, its only record (the delete is incomplete, not unsafe).
	unproven bool
	// answer is what asking the task's shim found (step shim); shimAlive
	// is set when it answers and is left (LeaveLiveShim): the delete then
	// touches neither the shim, its socket nor the pod's other tasks.
	// refused is ErrShimAlive, wrapped, when the delete refused.
	answer    liveness.Answer
	shimAlive bool
	refused   error
	// stateUntrusted is set by load when runc's state is not this
	// container's (stateMatchesBundle): the runtime's delete, which would
	// act on it, is not run.
	stateUntrusted bool
	// foreignState is set by load to the bundle runc's state names when
	// that is another directory that exists: the state is that
	// container's record (another containerd's, reached through
	// options.json's root), and release leaves it.
	foreignState string

	// loadMounts is the mount table load found the cgroups in (release
	// removes runc's state directory with it); unmountMounts the one
	// unmount took the mounts from (remove uses it). nil: none could be
	// read, and each use reads afresh.
	loadMounts, unmountMounts *mounttable.Table
}

// prober is the delete's one liveness.Prober: Request.Prober, else one
// made the first time it is needed. It is not safe for concurrent first
// use: the steps that need it run one after the other (shim, then the
// sandbox's members), and what they start gets it already made.
func (d *deletion) prober() *liveness.Prober {
	if d.req.Prober == nil {
		d.req.Prober = liveness.NewProber()
	}
	return d.req.Prober
}

// unsafe returns ErrUnsafe, with why, when the task directory had to be
// left in place; containerd must then not remove it either.
func (d *deletion) unsafe() error {
	var why []string
	if d.survivors {
		why = append(why, "a container process survived")
	}
	if d.mountsLeft {
		why = append(why, "a mount under it could not be removed")
	}
	if d.removeLeft {
		why = append(why, "it could not be removed whole")
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrUnsafe, d.path, strings.Join(why, "; "))
}

// run times one step and records its result.
func (d *deletion) run(ctx context.Context, name string, step func(context.Context, *StepReport)) {
	d.rep.Steps = append(d.rep.Steps, runStep(ctx, name, step))
}

func runStep(ctx context.Context, name string, step func(context.Context, *StepReport)) StepReport {
	failpoint.KillAt(name)
	s := StepReport{Step: name}
	t := time.Now()
	step(ctx, &s)
	s.Duration = time.Since(t)
	return s
}

// namedStep is a step and its name in the report.
type namedStep struct {
	name string
	step func(context.Context, *StepReport)
}

// runSideBySide runs two sequences of steps at the same time, each in
// order, and records them as a then b. The sequences must not share what
// they write.
func (d *deletion) runSideBySide(ctx context.Context, a, b []namedStep) {
	seq := func(steps []namedStep) []StepReport {
		out := make([]StepReport, 0, len(steps))
		for _, st := range steps {
			out = append(out, runStep(ctx, st.name, st.step))
		}
		return out
	}
	var ra []StepReport
	done := make(chan struct{})
	go func() { defer close(done); ra = seq(a) }()
	rb := seq(b)
	<-done
	d.rep.Steps = append(append(d.rep.Steps, ra...), rb...)
}

// runtimeReadsBundle reports whether the runtime's delete may read the
// task directory: it will run (runc's state exists), and its poststop hooks,
// which are handed the bundle path, are present or unknown (state.json
// unreadable). Only then must the task directory outlive it.
func (d *deletion) runtimeReadsBundle() bool {
	if _, err := os.Stat(d.b.StateDir); err != nil {
		return false
	}
	return d.b.State == nil || d.b.State.Config.HasPoststopHooks()
}

// release is the step "release" (see Delete): the container's cgroups in every hierarchy and the
// runtime's own delete, side by side, then runc's state directory if the
// runtime did not remove it.
func (d *deletion) release(ctx context.Context, s *StepReport) {
	// The cgroups are removed while the runtime starts: it then finds them
	// gone (which it takes as done) instead of removing them itself.
	var (
		removed []string
		err     error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() { defer wg.Done(); removed, err = d.cgroups.Remove(ctx) }()
	d.runtimeDelete(ctx, s)
	wg.Wait()
	if len(removed) > 0 {
		s.done(fmt.Sprintf("removed %d cgroups", len(removed)))
	}
	if err != nil {
		s.fail(err)
	}
	d.releaseSystemdUnit(ctx, s)
	switch ok, err := isRuncState(d.b.StateDir); {
	case err != nil:
		s.fail(err)
	case ok && d.foreignState != "":
		s.problem(fmt.Errorf("runc state %s: it is the record of the container of the bundle %s, which exists: left in place", d.b.StateDir, d.foreignState))
	case ok:
		if err := bundle.RemoveAll(d.b.StateDir, d.loadMounts); err != nil {
			s.fail(fmt.Errorf("runc state: %w", err))
		} else {
			s.done("removed runc state " + d.b.StateDir)
		}
	}
	if s.Outcome == "" {
		s.nothing("no cgroup or runc state left")
	}
}

// isRuncState reports whether dir exists and looks like a runc state
// directory (it holds state.json, or is empty): options.json may name any
// root, and nothing else is removed on its say-so.
func isRuncState(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("runc state %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() == "state.json" {
			return true, nil
		}
	}
	if len(entries) == 0 {
		return true, nil
	}
	return false, fmt.Errorf("runc state %s: holds no state.json: left in place", dir)
}

// unmount is the step "unmount" (see Delete): every mount at or below the
// task directory, deepest first. A mount that stays keeps remove from
// touching the task directory.
func (d *deletion) unmount(ctx context.Context, s *StepReport) {
	mt, err := d.req.Mounts.Get()
	if err != nil {
		d.mountsLeft = true
		s.fail(fmt.Errorf("unmount all %s: %w", d.path, err))
		return
	}
	d.unmountMounts = mt
	unmounted, err := bundle.UnmountAll(d.path, mt)
	if len(unmounted) > 0 {
		s.done(fmt.Sprintf("unmounted %d: %s", len(unmounted), strings.Join(unmounted, " ")))
	}
	if err != nil {
		d.mountsLeft = true
		s.fail(err)
	}
	if s.Outcome == "" {
		s.nothing("no mount under the task directory")
	}
}

// remove is the step "remove" (see Delete): the task directory and its work directory, never
// through a mount point, and the dead shim's socket.
func (d *deletion) remove(ctx context.Context, s *StepReport) {
	// The task directory is the record of the rest (its `work` link names
	// the work directory, `address` or bootstrap.json the socket): it goes
	// last, so that a delete killed half-way leaves a record from which the
	// next one finishes the job. The socket and the work directory are
	// independent: each is removed in its own goroutine. The results are
	// recorded socket, task directory, work directory.
	var (
		wg                     sync.WaitGroup
		sockRemoved            bool
		sockErr, dirErr, wdErr error
	)
	if d.b.Address != "" && !d.shimAlive {
		wg.Add(1)
		go func() { defer wg.Done(); sockRemoved, sockErr = bundle.RemoveDeadSocket(d.b.Address, d.b.SocketDir) }()
	}
	safe := !d.mountsLeft && !d.survivors && !d.unproven
	if safe && d.b.WorkDir != "" {
		wg.Add(1)
		go func() { defer wg.Done(); wdErr = bundle.RemoveAll(d.b.WorkDir, d.unmountMounts) }()
	}
	wg.Wait()
	if safe && !d.b.Missing {
		dirErr = bundle.RemoveAll(d.path, d.unmountMounts)
	}

	if sockErr != nil {
		s.problem(sockErr)
	} else if sockRemoved {
		s.done("removed dead shim socket " + d.b.Address)
	}
	if !safe {
		s.fail(fmt.Errorf("%w: %s", ErrUnsafe, d.path))
		d.guard(s)
		return
	}
	if !d.b.Missing {
		if dirErr != nil {
			// Whatever stopped us may be a mount: containerd's own removal
			// after a zero exit would cross it.
			d.removeLeft = true
			s.fail(dirErr)
			d.guard(s)
		} else {
			s.done("removed task directory")
		}
	}
	if d.b.WorkDir != "" {
		if wdErr != nil {
			s.fail(wdErr)
		} else {
			s.done("removed work directory " + d.b.WorkDir)
		}
	}
	if s.Outcome == "" {
		s.nothing("task directory already gone")
	}
}

// guard is part of the step "remove" when the task directory is left in place:
// containerd 2.x removes the bundle at start-up even after a failed delete,
// and bundle.Guard makes that removal stop before it could cross a mount.
func (d *deletion) guard(s *StepReport) {
	if d.b.Missing {
		return
	}
	if err := bundle.Guard(d.path); err != nil {
		s.fail(err)
		return
	}
	s.note("left " + bundle.RootfsDir + "/" + bundle.GuardFile + " so that containerd's own removal stops before the mount")
}

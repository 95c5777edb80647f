package deletion

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	runcC "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// runtimeDelete is part of the step "release" (see Delete): the runtime's own
// `delete --force`, run only for what only the runtime can do (runtimeOwns:
// poststop hooks, a systemd unit, an Intel RDT group, a state it cannot
// read, or a container process that survived the kill step). By now the
// container's processes are gone, so the runtime finds a stopped container
// and does not poll. Otherwise, and when the binary or the state is
// missing, the delete path finishes natively: release removes the cgroups
// and runc's state directory itself, which is all a runc delete of a
// stopped container without those does (libcontainer destroy).
func (d *deletion) runtimeDelete(ctx context.Context, s *StepReport) {
	b := d.b
	if _, err := os.Stat(b.StateDir); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.problem(err)
		}
		return
	}
	why := d.runtimeOwns()
	if why == "" {
		s.note("finished natively: runc's state shows no poststop hook, systemd unit or Intel RDT group")
		return
	}
	if b.RuntimePath == "" {
		s.note("runtime binary " + b.Runtime + " not found: runtime delete skipped")
		return
	}
	r := &runcC.Runc{
		Command:      b.RuntimePath,
		Root:         filepath.Dir(b.StateDir),
		LogFormat:    runcC.JSON,
		PdeathSignal: unix.SIGKILL, // never outlive the delete
		Setpgid:      true,
	}
	if !b.Missing && !d.sideBySide {
		r.Log = filepath.Join(b.Path, "log.json")
	}
	if b.Options != nil {
		r.SystemdCgroup = b.Options.SystemdCgroup
	}
	if err := r.Delete(ctx, b.ID, &runcC.DeleteOpts{Force: true}); err != nil {
		s.problem(err)
		return
	}
	s.done(b.Runtime + " delete --force (" + why + ")")
}

// runtimeOwns says what of the container only the runtime's own delete can
// release, "" when nothing: then the delete path finishes natively.
func (d *deletion) runtimeOwns() string {
	st := d.b.State
	switch {
	case d.stateUntrusted:
		return ""
	case st == nil:
		return "runc's state could not be read"
	case d.survivors:
		return "a container process survived"
	case st.Config.HasPoststopHooks():
		return "poststop hooks"
	case st.Config.Cgroups != nil && st.Config.Cgroups.Systemd:
		return "a systemd unit"
	case st.HasIntelRdt():
		return "an Intel RDT group"
	}
	return ""
}

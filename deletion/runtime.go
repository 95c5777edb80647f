package deletion

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	runcC "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// runtimeDelete is part of step 4 (release): the runtime's own
// `delete --force`, run when its binary and its state exist, so that it
// tears down what it owns and runs the poststop hooks. By now the
// container's processes are gone, so the runtime finds a stopped container
// and does not poll. When the binary or the state is missing, the rest of
// the delete path finishes natively.
func (d *deletion) runtimeDelete(ctx context.Context, s *StepReport) {
	b := d.b
	if _, err := os.Stat(b.StateDir); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.problem(err)
		}
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
	s.done(b.Runtime + " delete --force")
}

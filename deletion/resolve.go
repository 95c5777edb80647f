package deletion

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"golang.org/x/sys/unix"
)

// TaskDir returns the task directory Delete resolves for r, after
// validating the namespace and id (nothing else is checked, nothing is
// touched): Bundle when set; else the working directory when its base name
// is the id (containerd runs `delete` there); else
// <StateDir>/<Namespace>/<ID> when StateDir is set (by hand, from anywhere);
// else the working directory, which Delete then refuses. A working
// directory that cannot be read (it was removed) counts as not the task
// directory. A relative Bundle or StateDir is made absolute.
func (r Request) TaskDir() (string, error) {
	if err := bundle.ValidateNamespace(r.Namespace); err != nil {
		return "", err
	}
	if err := bundle.ValidateID(r.ID); err != nil {
		return "", err
	}
	if r.Bundle != "" {
		return filepath.Abs(r.Bundle)
	}
	cwd, err := os.Getwd()
	if err == nil && filepath.Base(cwd) == r.ID {
		return cwd, nil
	}
	if r.StateDir != "" {
		return filepath.Abs(filepath.Join(r.StateDir, r.Namespace, r.ID))
	}
	if err != nil {
		return "", fmt.Errorf("no -bundle, no state directory and no working directory: %w", err)
	}
	return cwd, nil
}

// resolve is step 1. It validates the request before any path is built
// from it, finds the task directory and takes an exclusive lock on it, so
// that a second delete of the same task waits and then finds it gone.
func (d *deletion) resolve() (unlock func(), err error) {
	s := StepReport{Step: StepResolve}
	t := time.Now()
	defer func() {
		s.Duration = time.Since(t)
		if err != nil {
			s.fail(err)
		}
		d.rep.Steps = append(d.rep.Steps, s)
	}()

	if err := bundle.ValidateNamespace(d.req.Namespace); err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	if err := bundle.ValidateID(d.req.ID); err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	path, err := d.req.TaskDir()
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	if filepath.Base(path) != d.req.ID {
		return nil, fmt.Errorf("resolve: bundle %s is not the task directory of %q", path, d.req.ID)
	}
	d.path = path
	d.rep.Bundle = path
	s.done("")

	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			s.note("task directory already gone")
			return func() {}, nil
		}
		return nil, fmt.Errorf("resolve: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("resolve: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

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
// touched): Bundle when set; else, only when containerd runs the delete
// (ByContainerd), the working directory when its base name is the id
// (containerd runs `delete` in the bundle); else <StateDir>/<Namespace>/<ID>.
// By hand the working directory never stands for the task: a directory
// that happens to be named like the task is an operator's (`cd /srv/web &&
// ... -id web delete`). Without Bundle and StateDir (and, for containerd,
// without a working directory named after the id) it is an error. A
// relative Bundle or StateDir is made absolute. Whatever it returns, Delete
// removes nothing in it without positive evidence (bundle.CheckTaskDir).
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
	if r.ByContainerd {
		if cwd, err := os.Getwd(); err == nil && filepath.Base(cwd) == r.ID {
			return cwd, nil
		}
	}
	if r.StateDir != "" {
		return filepath.Abs(filepath.Join(r.StateDir, r.Namespace, r.ID))
	}
	if r.ByContainerd {
		return "", errors.New("no -bundle, no state directory, and the working directory is not the task directory")
	}
	return "", errors.New("no -bundle and no state directory (by hand, the working directory never stands for the task directory)")
}

// lockPoll bounds the wait between two tries of the task directory's lock.
const lockPoll = 20 * time.Millisecond

// lockWait is how long resolve waits for the task directory's lock: half
// the delete's timeout, so that the delete still has time for its steps
// once the other delete is done (it then mostly finds the task directory
// gone).
func (r Request) lockWait() time.Duration {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return timeout / 2
}

// resolve is the step "resolve" (see Delete). It validates the request before any path is built
// from it, finds the task directory, takes an exclusive lock on it (so
// that a second delete of the same task waits, within a bound, and then
// finds it gone) and checks the evidence that it is a runc v2 task
// directory (bundle.CheckTaskDir). Without evidence it returns an error
// wrapping bundle.ErrNotTaskDir, having touched nothing: whoever runs the
// delete (containerd too) is told why, and no later step runs.
//
// The lock: the directory is opened O_DIRECTORY|O_NOFOLLOW|O_NONBLOCK (a
// symlink, a file or a FIFO in its place is never followed nor waited on),
// LOCK_EX|LOCK_NB is tried until the delete's lock wait (lockWait) is over,
// and the locked inode must still be the path's (containerd renames a
// bundle away before removing it; a new task of the same id may then
// appear): if not, the path is opened and locked again.
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
		return nil, fmt.Errorf("resolve: %w: bundle %s is not the task directory of %q", bundle.ErrNotTaskDir, path, d.req.ID)
	}
	d.path = path
	d.rep.Bundle = path

	f, err := lockTaskDir(path, time.Now().Add(d.req.lockWait()))
	if err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	release := func() {
		if f != nil {
			f.Close()
		}
	}
	ev, err := bundle.CheckTaskDir(path, d.req.Namespace, d.req.ID)
	if err != nil {
		release()
		return nil, fmt.Errorf("resolve: %w; nothing touched", err)
	}
	s.done("task directory: " + ev.String())
	if f == nil {
		s.note("task directory already gone")
	}
	return release, nil
}

// lockTaskDir opens the directory at path and takes an exclusive flock on
// it, polling LOCK_NB until deadline. It returns (nil, nil) when path does
// not exist. The locked directory is checked to be the one path names at
// the moment the lock is held; otherwise it starts again.
func lockTaskDir(path string, deadline time.Time) (*os.File, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, nil
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("%w: %s is a symbolic link", bundle.ErrNotTaskDir, path)
		case errors.Is(err, unix.ENOTDIR):
			if _, serr := os.Lstat(path); errors.Is(serr, os.ErrNotExist) {
				return nil, nil // a parent is not a directory
			}
			return nil, fmt.Errorf("%w: %s is not a directory", bundle.ErrNotTaskDir, path)
		case err != nil:
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		f := os.NewFile(uintptr(fd), path)
		if err := flockUntil(fd, deadline); err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		same, err := sameInode(fd, path)
		if err != nil {
			f.Close()
			if errors.Is(err, unix.ENOENT) {
				return nil, nil // removed while we waited: by the delete we waited for
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if same {
			return f, nil
		}
		f.Close()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock %s: the directory was replaced while it was locked, again until the deadline", path)
		}
	}
}

// flockUntil takes LOCK_EX on fd, trying LOCK_NB until deadline.
func flockUntil(fd int, deadline time.Time) error {
	for delay := time.Millisecond; ; delay = min(2*delay, lockPoll) {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("held by another delete of the task until the deadline: %w", err)
		}
		time.Sleep(delay)
	}
}

// sameInode reports whether fd is the directory path names now.
func sameInode(fd int, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return false, err
	}
	if err := unix.Lstat(path, &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

package cgroups

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// rmdirAttempts bounds the tries per directory; with the backoff below
	// a busy directory is given up after about 150 ms (or when ctx ends).
	rmdirAttempts = 10
	rmdirMaxDelay = 32 * time.Millisecond
)

// Remove removes the set's directories in every hierarchy, descendant
// cgroups first (deepest first, never crossing into another mount), with
// bounded retries and backoff (EBUSY while the last processes exit). A
// missing directory is success. It returns the directories it removed,
// descendants included, in removal order; the error names each directory
// left. A directory whose descendant could not be removed is not tried.
// It refuses directories that Find would reject (a root cgroup, one that
// holds or is an ancestor of the calling process, its parent, or pid 1).
// It stops when ctx is done (checked before each directory it walks into
// or removes): the error then names the directories left and wraps
// ctx.Err().
func (s *Set) Remove(ctx context.Context) (removed []string, err error) {
	dirs, errs := s.resolve()
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: not tried: %w", d.path, err))
			continue
		}
		ok, err := onCgroupFS(d.path, d.v2)
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d.path, err))
			continue
		}
		if !ok {
			continue // already gone
		}
		r, err := removeTree(ctx, d.path)
		removed = append(removed, r...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// removeTree removes dir's descendants deepest first, then dir.
func removeTree(ctx context.Context, dir string) ([]string, error) {
	var order []string // parents before children
	if err := walkCgroups(ctx, dir, func(d string) { order = append(order, d) }); err != nil {
		return nil, fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	var (
		removed []string
		errs    []error
		failed  = map[string]bool{} // directories with a child left
	)
	for i := len(order) - 1; i >= 0; i-- {
		d := order[i]
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %d of its cgroups left, %s the next: %w", dir, i+1, d, err))
			break
		}
		if failed[d] {
			errs = append(errs, fmt.Errorf("remove cgroup %s: child cgroups left", d))
			markParents(failed, d, dir)
			continue
		}
		ok, err := rmdir(ctx, d)
		if err != nil {
			errs = append(errs, err)
			markParents(failed, d, dir)
			continue
		}
		if ok {
			removed = append(removed, d)
		}
	}
	return removed, errors.Join(errs...)
}

// markParents marks every ancestor of d up to top as having a child left.
func markParents(failed map[string]bool, d, top string) {
	for d != top {
		d = parentDir(d)
		failed[d] = true
	}
}

func parentDir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// rmdir removes one cgroup directory, retrying EBUSY with backoff. ok is
// false when it was already gone.
func rmdir(ctx context.Context, dir string) (ok bool, err error) {
	delay := time.Millisecond
	for i := 0; ; i++ {
		err = unix.Rmdir(dir)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.ENOENT):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EAGAIN):
			return false, fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if i+1 >= rmdirAttempts || ctx.Err() != nil {
			return false, fmt.Errorf("remove cgroup %s: gave up after %d attempts: %w", dir, i+1, err)
		}
		sleep(ctx, delay)
		delay = min(2*delay, rmdirMaxDelay)
	}
}

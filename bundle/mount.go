package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/failpoint"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// maxUnmountRounds bounds UnmountAll's passes. One pass normally suffices;
// more are needed only when a mount hid another (a mount over a parent of
// an earlier one) or a mount reappeared by propagation.
const maxUnmountRounds = 8

// resolvePath makes path absolute and clean and resolves the symlinks in
// its parent, as mountinfo needs; the last component is never followed (a
// symlink named path is never a mount point, and following it could lead
// anywhere).
func resolvePath(path string) (string, error) {
	if path == "" {
		return "", errors.New("empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return abs, nil
	}
	dir, base := filepath.Split(abs)
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		// A missing (or unreadable) parent: keep the lexical path; there is
		// nothing mounted below a path that does not resolve.
		return abs, nil
	}
	return filepath.Join(resolved, base), nil
}

// mountsUnder returns the mounts at or below the resolved path p in t, or
// in mountinfo read now when t is nil, in mountinfo order (a mount stacked
// on another comes after it).
func mountsUnder(t *mounttable.Table, p string) ([]*mountinfo.Info, error) {
	if t == nil {
		var err error
		if t, err = mounttable.Read(); err != nil {
			return nil, err
		}
	}
	return t.Under(p), nil
}

// stillMounted says whether mp is a mount point now, on the live system
// (moby's mountinfo.Mounted: openat2 RESOLVE_NO_XDEV, else st_dev, else
// mountinfo). A path that no longer exists is not; any other error counts
// as mounted, with the error.
func stillMounted(mp string) (bool, error) {
	m, err := mountinfo.Mounted(mp)
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return true, err
	}
}

// deepestFirst orders mounts for unmounting: deeper mount points first, and
// for equal depth the later mount first (so the top of a stack goes first).
func deepestFirst(ms []*mountinfo.Info) []string {
	mps := make([]string, 0, len(ms))
	for i := len(ms) - 1; i >= 0; i-- {
		mps = append(mps, ms[i].Mountpoint)
	}
	slices.SortStableFunc(mps, func(a, b string) int {
		return strings.Count(b, "/") - strings.Count(a, "/")
	})
	return mps
}

// UnmountAll unmounts every mount at or below path, deepest first; "not
// mounted" counts as success; a mount that will not unmount normally is
// detached (MNT_DETACH). The mounts are those t lists (nil: mountinfo read
// now), and each is then confirmed on the live system (stillMounted): a
// pass over the mount points still mounted is repeated while passes make
// progress. It returns an error naming every mount point still present,
// and the mount points it unmounted, also with an error.
//
// Edge cases: path itself is included when it is a mount point. Every mount
// of a stack on one mount point is unmounted, and unmounted then lists that
// mount point once per mount removed. A mount hidden under another (mounted
// on a parent after it) is reached in the pass after the one that unmounts
// what hid it. Unmounting never follows a symlink (UMOUNT_NOFOLLOW);
// symlinks in path's parent are resolved first, as mountinfo shows real
// paths. A missing path, or one with nothing mounted, returns (nil, nil).
// EINVAL and ENOENT from umount mean "not mounted" and are success. Passes
// are bounded; "/" is refused. A mount made below path after t was read is
// not seen here: RemoveAll, which finds mount points by itself at every
// step, leaves it in place.
func UnmountAll(path string, t *mounttable.Table) (unmounted []string, err error) {
	p, err := resolvePath(path)
	if err != nil {
		return nil, fmt.Errorf("unmount all %q: %w", path, err)
	}
	if p == "/" {
		return nil, fmt.Errorf("unmount all %s: refusing to unmount the root", p)
	}
	ms, err := mountsUnder(t, p)
	if err != nil {
		return nil, fmt.Errorf("unmount all %s: %w", p, err)
	}
	if len(ms) == 0 {
		return nil, nil
	}
	pending := deepestFirst(ms)
	failed := map[string]error{}
	for round := 0; round < maxUnmountRounds && len(pending) > 0; round++ {
		progress := false
		clear(failed)
		for _, mp := range pending {
			done, err := unmountOne(mp)
			if done {
				unmounted = append(unmounted, mp)
				progress = true
			}
			if err != nil {
				failed[mp] = err
			}
		}
		pending = mounted(pending, failed)
		if !progress {
			break
		}
	}
	if len(pending) == 0 {
		return unmounted, nil
	}
	var left []string
	for _, mp := range pending {
		if e, ok := failed[mp]; ok {
			left = append(left, fmt.Sprintf("%s (%v)", mp, e))
		} else {
			left = append(left, mp)
		}
	}
	return unmounted, fmt.Errorf("unmount all %s: still mounted: %s: %w", p, strings.Join(left, ", "), unix.EBUSY)
}

// mounted returns the mount points of mps (deepest first, each once) that
// are still mount points; an error of the check is recorded in failed
// unless umount's own is there.
func mounted(mps []string, failed map[string]error) []string {
	var out []string
	seen := map[string]bool{}
	for _, mp := range mps {
		if seen[mp] {
			continue
		}
		seen[mp] = true
		m, err := stillMounted(mp)
		if err != nil && failed[mp] == nil {
			failed[mp] = err
		}
		if m {
			out = append(out, mp)
		}
	}
	return out
}

// unmountOne unmounts the top mount on mp, detaching it when it is busy.
// It reports whether a mount was removed; "not mounted" is (false, nil);
// any other error is umount's own, unwrapped.
func unmountOne(mp string) (bool, error) {
	err := unmount(mp, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		err = unmount(mp, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// unmount is unix.Unmount retried on EINTR. The test-only failpoint
// "unmount=SUBSTR" makes it fail with EPERM for mount points containing SUBSTR.
func unmount(mp string, flags int) error {
	if failpoint.Enabled {
		if sub, ok := failpoint.Arg("unmount"); ok && sub != "" && strings.Contains(mp, sub) {
			return unix.EPERM
		}
	}
	for i := 0; i < 3; i++ {
		err := unix.Unmount(mp, flags)
		if err != unix.EINTR {
			return err
		}
	}
	return unix.EINTR
}

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
)

// maxUnmountRounds bounds UnmountAll's passes over mountinfo. One pass
// normally suffices; more are needed only when a mount hid another (a mount
// over a parent of an earlier one) or a mount reappeared by propagation.
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

// mountsUnder returns the mounts at or below the resolved path p, in
// mountinfo order (a mount stacked on another comes after it).
func mountsUnder(p string) ([]*mountinfo.Info, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(p))
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return ms, nil
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

// UnmountAll unmounts every mount at or below path (as seen in
// /proc/self/mountinfo), deepest first; "not mounted" counts as success; a
// mount that will not unmount normally is detached (MNT_DETACH). It then
// checks mountinfo again and returns an error naming every mount point still
// present. It returns the mount points it unmounted, also with an error.
//
// Edge cases: path itself is included when it is a mount point. Every mount
// of a stack on one mount point is unmounted, and unmounted then lists that
// mount point once per mount removed. Unmounting never follows a symlink
// (UMOUNT_NOFOLLOW); symlinks in path's parent are resolved first, as
// mountinfo shows real paths. A missing path, or one with nothing mounted,
// returns (nil, nil). EINVAL and ENOENT from umount mean "not mounted" and
// are success. Passes over mountinfo are bounded; "/" is refused.
func UnmountAll(path string) (unmounted []string, err error) {
	p, err := resolvePath(path)
	if err != nil {
		return nil, fmt.Errorf("unmount all %q: %w", path, err)
	}
	if p == "/" {
		return nil, fmt.Errorf("unmount all %s: refusing to unmount the root", p)
	}
	failed := map[string]error{}
	for round := 0; round < maxUnmountRounds; round++ {
		ms, err := mountsUnder(p)
		if err != nil {
			return unmounted, fmt.Errorf("unmount all %s: %w", p, err)
		}
		if len(ms) == 0 {
			return unmounted, nil
		}
		progress := false
		clear(failed)
		for _, mp := range deepestFirst(ms) {
			done, err := unmountOne(mp)
			if done {
				unmounted = append(unmounted, mp)
				progress = true
			}
			if err != nil {
				failed[mp] = err
			}
		}
		if !progress {
			break
		}
	}
	ms, err := mountsUnder(p)
	if err != nil {
		return unmounted, fmt.Errorf("unmount all %s: %w", p, err)
	}
	if len(ms) == 0 {
		return unmounted, nil
	}
	var left []string
	for _, mp := range deepestFirst(ms) {
		if e, ok := failed[mp]; ok {
			left = append(left, fmt.Sprintf("%s (%v)", mp, e))
		} else {
			left = append(left, mp)
		}
	}
	return unmounted, fmt.Errorf("unmount all %s: still mounted: %s: %w", p, strings.Join(left, ", "), unix.EBUSY)
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

package bundle

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// maxRmdirAttempts bounds how often RemoveAll empties a directory that
// something keeps refilling before it gives up on it.
const maxRmdirAttempts = 3

// detectors selects the mount point checks RemoveAll makes; all are on
// outside tests, which switch them one at a time to prove each works alone.
type detectors struct {
	mountinfo bool // the path is a mount point in /proc/self/mountinfo
	dev       bool // a directory's st_dev differs from its parent's
	openat2   bool // openat2 with RESOLVE_NO_XDEV fails with EXDEV
}

var allDetectors = detectors{mountinfo: true, dev: true, openat2: true}

// openat2Missing is set once openat2 is found unusable (ENOSYS on kernels
// before 5.6, EPERM from a seccomp filter, EINVAL/E2BIG for unknown flags).
var openat2Missing atomic.Bool

// probeOpenat2 makes openat2Works's one trial.
var probeOpenat2 sync.Once

// RemoveAll removes path and everything below it, like os.RemoveAll, but
// never crosses a mount point: a directory or file that is a mount point (by
// mountinfo, by st_dev, or by openat2 RESOLVE_NO_XDEV) is left in place with
// everything above it, and the returned error names each such path.
// A missing path is success.
//
// Edge cases: the mount points known before the walk are those t lists
// below path (nil: mountinfo read now) that are still mount points then
// (t may predate the unmounts that followed it); where openat2 is
// unavailable (kernels before 5.6, a seccomp filter) mountinfo is read now
// whatever t is, as only mountinfo then shows a bind mount of the same
// filesystem; if it cannot be read nothing is removed. The walk uses only
// file-descriptor-relative calls (openat with O_NOFOLLOW|O_DIRECTORY,
// fstatat, unlinkat) and never follows a symlink: a symlink, including path
// itself, is removed as a link. ENOENT at any step (a concurrent delete of
// the same tree) is success. The st_dev check applies to directories only:
// overlayfs may report a lower layer's st_dev for plain files, and a plain
// file that is a mount point is still caught by mountinfo, openat2, and the
// kernel's own EBUSY on unlink. A btrfs subvolume has its own st_dev and is
// treated as a mount point. Symlinks in path's parent are resolved (as
// mountinfo needs real paths); "/" and "" are refused. Each mount point left
// is reported as an error wrapping unix.EBUSY; other failures (EACCES,
// EROFS...) are reported too, and the walk goes on past them.
func RemoveAll(path string, t *mounttable.Table) error {
	return removeAll(path, t, allDetectors)
}

func removeAll(path string, t *mounttable.Table, use detectors) error {
	p, err := resolvePath(path)
	if err != nil {
		return fmt.Errorf("remove all %q: %w", path, err)
	}
	if p == "/" {
		return fmt.Errorf("remove all %s: refusing to remove the root", p)
	}
	r := &remover{use: use, mounts: map[string]struct{}{}}
	if use.mountinfo {
		if !openat2Works() {
			t = nil
		}
		ms, err := mountsUnder(t, p)
		if err != nil {
			return fmt.Errorf("remove all %s: nothing removed: %w", p, err)
		}
		for _, m := range ms {
			if t != nil {
				if still, _ := stillMounted(m.Mountpoint); !still {
					continue
				}
			}
			r.mounts[m.Mountpoint] = struct{}{}
		}
	}
	dirFd, err := unix.Open(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("remove all %s: open parent: %w", p, err)
	}
	defer unix.Close(dirFd)
	var st unix.Stat_t
	if err := unix.Fstat(dirFd, &st); err != nil {
		return fmt.Errorf("remove all %s: stat parent: %w", p, err)
	}
	r.remove(dirFd, st.Dev, filepath.Base(p), p)
	if len(r.errs) == 0 {
		return nil
	}
	return fmt.Errorf("remove all %s: %w", p, errorList(r.errs))
}

// mountPointError names a mount point RemoveAll left in place.
type mountPointError struct {
	path string
	how  string // which check found it
}

func (e *mountPointError) Error() string {
	return e.path + " is a mount point (" + e.how + "), left in place"
}

func (e *mountPointError) Unwrap() error { return unix.EBUSY }

// errorList is errors.Join on one line.
type errorList []error

func (l errorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l errorList) Unwrap() []error { return l }

type remover struct {
	use    detectors
	mounts map[string]struct{}
	errs   []error
}

func (r *remover) keep(full, how string) {
	r.errs = append(r.errs, &mountPointError{path: full, how: how})
}

func (r *remover) fail(full, op string, err error) {
	r.errs = append(r.errs, fmt.Errorf("%s %s: %w", op, full, err))
}

// remove removes name in the directory dirFd (on device dirDev), whose path
// is full. It reports whether name is gone.
func (r *remover) remove(dirFd int, dirDev uint64, name, full string) bool {
	var st unix.Stat_t
	if err := unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return true
		}
		r.fail(full, "stat", err)
		return false
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if how := r.mountPoint(dirFd, dirDev, name, full, isDir, st.Dev); how != "" {
		r.keep(full, how)
		return false
	}
	if !isDir {
		return r.unlink(dirFd, name, full)
	}
	return r.removeDir(dirFd, dirDev, name, full)
}

// mountPoint says which check finds name a mount point, "" when none does.
func (r *remover) mountPoint(dirFd int, dirDev uint64, name, full string, isDir bool, dev uint64) string {
	if r.use.mountinfo {
		if _, ok := r.mounts[full]; ok {
			return "listed in mountinfo"
		}
	}
	if r.use.dev && isDir && dev != dirDev {
		return "st_dev differs from its parent's"
	}
	if r.use.openat2 {
		fd, err := openat2(dirFd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err == nil {
			unix.Close(fd)
		} else if errors.Is(err, unix.EXDEV) {
			return "openat2 RESOLVE_NO_XDEV: EXDEV"
		}
	}
	return ""
}

func (r *remover) unlink(dirFd int, name, full string) bool {
	err := unix.Unlinkat(dirFd, name, 0)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return true
	case errors.Is(err, unix.EBUSY):
		r.keep(full, "unlink: EBUSY")
	default:
		r.fail(full, "unlink", err)
	}
	return false
}

// removeDir empties and removes the directory name in dirFd.
func (r *remover) removeDir(dirFd int, dirDev uint64, name, full string) bool {
	for attempt := 0; attempt < maxRmdirAttempts; attempt++ {
		fd, err := r.openDir(dirFd, name)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOENT):
			return true
		case errors.Is(err, unix.EXDEV):
			r.keep(full, "openat2 RESOLVE_NO_XDEV: EXDEV")
			return false
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			// Replaced by a symlink or a file since fstatat: unlink that.
			return r.unlink(dirFd, name, full)
		default:
			r.fail(full, "open", err)
			return false
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			r.fail(full, "stat", err)
			return false
		}
		if r.use.dev && st.Dev != dirDev {
			unix.Close(fd)
			r.keep(full, "st_dev differs from its parent's")
			return false
		}
		names, err := readNames(fd)
		if err != nil {
			unix.Close(fd)
			r.fail(full, "read directory", err)
			return false
		}
		clean := true
		for _, n := range names {
			if !r.remove(fd, st.Dev, n, full+"/"+n) {
				clean = false
			}
		}
		unix.Close(fd)
		if !clean {
			// What is left below is already reported; rmdir would only
			// add ENOTEMPTY.
			return false
		}
		err = unix.Unlinkat(dirFd, name, unix.AT_REMOVEDIR)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return true
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
			continue // refilled concurrently: empty it again
		case errors.Is(err, unix.EBUSY):
			r.keep(full, "rmdir: EBUSY")
			return false
		default:
			r.fail(full, "rmdir", err)
			return false
		}
	}
	r.fail(full, "rmdir", fmt.Errorf("still not empty after %d attempts: %w", maxRmdirAttempts, unix.ENOTEMPTY))
	return false
}

// openDir opens the directory name in dirFd for reading without following a
// symlink and, when openat2 works and the check is on, without crossing
// into a mount (EXDEV).
func (r *remover) openDir(dirFd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	if r.use.openat2 && !openat2Missing.Load() {
		fd, err := openat2(dirFd, name, flags)
		if !openat2Missing.Load() {
			return fd, err
		}
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat(dirFd, name, flags, 0)
		if err != unix.EINTR || i >= 10 {
			return fd, err
		}
	}
}

// openat2Works says whether openat2 can be used here, trying it once on
// "/" when no call has said so yet.
func openat2Works() bool {
	if openat2Missing.Load() {
		return false
	}
	probeOpenat2.Do(func() {
		if fd, err := openat2(unix.AT_FDCWD, "/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC); err == nil {
			unix.Close(fd)
		}
	})
	return !openat2Missing.Load()
}

// openat2 opens name in dirFd with RESOLVE_NO_XDEV and no symlinks. When
// the kernel or a seccomp filter refuses openat2 itself, it sets
// openat2Missing and returns ENOSYS.
func openat2(dirFd int, name string, flags int) (int, error) {
	if openat2Missing.Load() {
		return -1, unix.ENOSYS
	}
	how := &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirFd, name, how)
		switch err {
		case unix.EINTR, unix.EAGAIN:
			if i < 10 {
				continue
			}
		case unix.ENOSYS, unix.EPERM, unix.E2BIG:
			openat2Missing.Store(true)
			return -1, unix.ENOSYS
		}
		return fd, err
	}
}

// readNames lists the entries of the directory fd, without "." and "..".
// A directory removed meanwhile reads as empty.
func readNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ENOENT {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

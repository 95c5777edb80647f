package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// gone reports an error that means the file or directory is not there
// (anymore): the cgroup was removed, which counts as released.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV)
}

// writeCgroupFile writes v to an existing cgroup control file (never
// creating one).
func writeCgroupFile(dir, name, v string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// hasFile reports whether dir/name exists.
func hasFile(dir, name string) bool {
	return unix.Access(filepath.Join(dir, name), unix.F_OK) == nil
}

// readPids reads a cgroup.procs file. A missing file or cgroup is empty.
func readPids(file string) ([]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if gone(err) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, err
	}
	var pids []int
	for _, l := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(l)
		if err != nil || pid <= 0 {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// walkCgroups calls fn for dir and every descendant directory on the same
// filesystem, parents before children. Directories that vanish meanwhile
// are skipped. It never follows symlinks nor enters another mount. It
// stops when ctx is done, checked before each directory below dir (dir
// itself is always visited): the error then names the directory it did
// not enter and wraps ctx.Err().
func walkCgroups(ctx context.Context, dir string, fn func(dir string)) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if gone(err) {
			return nil
		}
		return &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return &os.PathError{Op: "walk", Path: dir, Err: syscall.ENOTDIR}
	}
	return walkDev(ctx, dir, st.Dev, fn)
}

func walkDev(ctx context.Context, dir string, dev uint64, fn func(dir string)) error {
	fn(dir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if gone(err) {
			return nil
		}
		return err
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("walk cgroup %s: stopped before %s: %w", dir, sub, err))...)
		}
		var st unix.Stat_t
		if err := unix.Lstat(sub, &st); err != nil {
			if !gone(err) {
				errs = append(errs, &os.PathError{Op: "lstat", Path: sub, Err: err})
			}
			continue
		}
		if st.Dev != dev || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		if err := walkDev(ctx, sub, dev, fn); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// onCgroupFS reports whether dir is on a cgroup (v1 or v2) filesystem; a
// missing dir is (false, nil).
func onCgroupFS(dir string, v2 bool) (bool, error) {
	var sf unix.Statfs_t
	if err := unix.Statfs(dir, &sf); err != nil {
		if gone(err) {
			return false, nil
		}
		return false, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	want := int64(unix.CGROUP_SUPER_MAGIC)
	if v2 {
		want = unix.CGROUP2_SUPER_MAGIC
	}
	if int64(sf.Type) != want {
		return false, &os.PathError{Op: "statfs", Path: dir, Err: errors.New("not on the expected cgroup filesystem")}
	}
	return true, nil
}

func closeFd(fd int) { _ = unix.Close(fd) }

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

// readPids lists the processes in cgroup dir (not its descendants), each
// once: its cgroup.procs. A missing file or cgroup is empty.
//
// cgroup v2 refuses to list the processes of a threaded cgroup (a read of
// its cgroup.procs fails with EOPNOTSUPP): as runc does
// (opencontainers/cgroups readProcsFile), its cgroup.threads is read
// instead, and each thread id is mapped to its process, the Tgid of
// /proc/<tid>/status (procOfThread), so that a process whose threads are
// there is still found. A thread that is gone meanwhile is passed over; a
// thread whose process cannot be told is an error, with the processes
// found.
func readPids(dir string) ([]int, error) {
	pids, err := readIDs(filepath.Join(dir, "cgroup.procs"))
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return pids, err
	}
	file := filepath.Join(dir, "cgroup.threads")
	tids, err := readIDs(file)
	if err != nil {
		return nil, err
	}
	var (
		errs []error
		seen = map[int]bool{}
	)
	pids = nil
	for _, tid := range tids {
		pid, err := procOfThread(tid)
		switch {
		case errors.Is(err, errGone):
		case err != nil:
			errs = append(errs, fmt.Errorf("thread %d listed in %s: %w", tid, file, err))
		case !seen[pid]:
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	return pids, errors.Join(errs...)
}

// readIDs reads a cgroup.procs or cgroup.threads file: positive decimal
// ids, one a line. A missing file or cgroup is empty.
func readIDs(file string) ([]int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		if gone(err) {
			return nil, nil
		}
		return nil, err
	}
	var ids []int
	for _, l := range strings.Fields(string(data)) {
		id, err := strconv.Atoi(l)
		if err != nil || id <= 0 {
			continue
		}
		ids = append(ids, id)
	}
	return ids, nil
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

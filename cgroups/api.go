package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// Evidence is what a container's cgroups are found from. Every field may be
// empty or garbage: bad fields turn into errors from Find, never into a
// directory outside the container.
type Evidence struct {
	// StatePaths is runc state.json's cgroup_paths: v1 subsystem (or
	// "name=systemd") -> absolute directory; "" -> unified directory.
	// The keys are informational: each directory is placed by the cgroup
	// mount it lies in, and its cgroup path is also looked up in every
	// other mounted hierarchy.
	StatePaths map[string]string
	// CgroupsPath is the spec's linux.cgroupsPath: a cgroupfs path such as
	// "/default/ctr" or systemd's "slice:prefix:name". A relative cgroupfs
	// path is not used (an error from Find): runc resolved it against its
	// own cgroup when it created the container (the shim's; v2: its
	// parent), which is not recorded anywhere, and against the caller's
	// cgroup it would name someone else's. runc's state (StatePaths) holds
	// what it resolved to. Empty means no evidence (runc's systemd default
	// "system.slice:runc:<id>" needs the id, which is not known here).
	CgroupsPath string
	// Systemd says CgroupsPath is in systemd form (options SystemdCgroup);
	// a path of the form "a:b:c" without '/' is taken as systemd form anyway.
	Systemd bool
}

// Set is one container's cgroups: one absolute directory per mounted
// hierarchy that has (or had) it. Directories that no longer exist are kept;
// every operation counts them as already released.
//
// A Set built by Find carries what it learned about each directory; a Set
// built by hand (Set{Dirs: ...}) is validated again by every operation with
// the same rules as Find, and rejected directories are reported as errors
// and left alone. The zero Set and a nil *Set hold nothing.
type Set struct {
	Dirs []string

	dirs []dirInfo // resolved by Find, parallel to Dirs
}

// Find maps the evidence onto the cgroup filesystems mounted now (from
// /proc/self/mountinfo): every v1 hierarchy, a cgroup2 mount at any
// mountpoint, or both (hybrid), minding each mount's root field. State
// paths and the cgroupsPath are used together and deduplicated: one
// directory per hierarchy and cgroup path, the first mount that reaches it
// wins (a hierarchy mounted twice yields one directory).
//
// A directory is accepted only when it lies strictly below the root of a
// mounted cgroup filesystem, is not a hierarchy's root cgroup, has no ".."
// in the evidence, is not reached through a mount made outside the caller's
// cgroup namespace (mountinfo root with ".."; its cgroups cannot be placed
// relative to the caller's own), and does not hold (nor is an ancestor of the cgroup of)
// the calling process, its parent, or pid 1; rejected candidates are
// returned as errors next to the set. A cgroup path refused in one
// hierarchy is dropped from all of them (runc uses one path everywhere, and
// a container's cgroup never holds those processes). The returned Set is
// never nil. An empty Set with no evidence is not an error. Find does not
// check that the directories exist.
func Find(ev Evidence) (*Set, []error) {
	sets, errs := FindEach(nil, ev)
	return sets[0], errs[0]
}

// CgroupPaths returns, parallel to Dirs, the cgroup path of each directory
// inside its hierarchy, as /proc/<pid>/cgroup shows it (e.g.
// "/default/web"); "" for a directory Find's rules refuse (a hand-built
// set is validated again).
func (s *Set) CgroupPaths() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.Dirs))
	if s.cached() {
		for i, d := range s.dirs {
			out[i] = d.cg
		}
		return out
	}
	t, err := loadTable(nil)
	if err != nil {
		return out
	}
	for i, p := range s.Dirs {
		if d, err := t.classify(p); err == nil {
			out[i] = d.cg
		}
	}
	return out
}

// Outside returns a directory of o whose cgroup (hierarchy and cgroup
// path) is not one of s's, and "" when every cgroup of o is one of s's. The
// same cgroup reached through two mounts (a hierarchy mounted twice, or a
// cgroup2 mount over another) counts once. Both sets must come from Find.
func (s *Set) Outside(o *Set) string {
	type id struct{ key, cg string }
	have := map[id]bool{}
	for _, d := range s.dirs {
		have[id{d.key, d.cg}] = true
	}
	for _, d := range o.dirs {
		if !have[id{d.key, d.cg}] {
			return d.path
		}
	}
	return ""
}

// FindEach is Find for each evidence in turn, against one reading of the
// mount table: mt, or mountinfo read now when mt is nil (its cost grows
// with the number of mounts on the host; one gc sweep shares a reading).
// The guarded processes' cgroups are read now either way.
func FindEach(mt *mounttable.Table, evs ...Evidence) ([]*Set, [][]error) {
	sets, errs := make([]*Set, len(evs)), make([][]error, len(evs))
	t, err := loadTable(mt)
	for i, ev := range evs {
		if err != nil {
			sets[i], errs[i] = &Set{}, []error{fmt.Errorf("find cgroups: %w", err)}
			continue
		}
		sets[i], errs[i] = t.find(ev)
	}
	return sets, errs
}

// resolve returns the set's directories with what is known about them,
// validating a hand-built set against the mounts, and rechecks against the
// guarded processes' current cgroups (they may have moved since Find).
func (s *Set) resolve() ([]dirInfo, []error) {
	if s == nil || len(s.Dirs) == 0 {
		return nil, nil
	}
	var (
		dirs []dirInfo
		errs []error
	)
	if s.cached() {
		dirs = s.dirs
	} else {
		t, err := loadTable(nil)
		if err != nil {
			return nil, []error{fmt.Errorf("validate cgroups: %w", err)}
		}
		for _, p := range s.Dirs {
			d, err := t.classify(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("refuse cgroup: %w", err))
				continue
			}
			dirs = append(dirs, d)
		}
		return dirs, errs
	}
	g, err := guardedNow()
	if err != nil {
		return nil, []error{fmt.Errorf("validate cgroups: %w", err)}
	}
	ok := make([]dirInfo, 0, len(dirs))
	for _, d := range dirs {
		if err := g.check(d); err != nil {
			errs = append(errs, fmt.Errorf("refuse cgroup: %w", err))
			continue
		}
		ok = append(ok, d)
	}
	return ok, errs
}

// cached reports whether s.dirs (from Find) still describes s.Dirs.
func (s *Set) cached() bool {
	if len(s.dirs) != len(s.Dirs) {
		return false
	}
	for i, d := range s.dirs {
		if d.path != s.Dirs[i] {
			return false
		}
	}
	return true
}

// guardedNow is a table holding only the guarded processes' cgroups.
func guardedNow() (*table, error) {
	t := &table{}
	for _, g := range guardedPids() {
		paths, err := readProcCgroup(g.pid)
		if err != nil {
			if g.pid == os.Getpid() {
				return nil, fmt.Errorf("read own cgroups: %w", err)
			}
			continue
		}
		t.guarded = append(t.guarded, guarded{pid: g.pid, what: g.what, paths: paths})
	}
	return t, nil
}

// member reports whether a process with these cgroups (from
// /proc/<pid>/cgroup) is in one of dirs or below it.
func member(paths map[string]string, dirs []dirInfo) bool {
	for _, d := range dirs {
		p, ok := paths[d.key]
		if ok && (p == d.cg || strings.HasPrefix(p, d.cg+"/")) {
			return true
		}
	}
	return false
}

// isMember reports whether the process behind fd (a pidfd of pid) has not
// exited and is in one of dirs. A process that is gone is (false, nil).
func isMember(fd, pid int, dirs []dirInfo) (bool, error) {
	_, ok, err := memberCgroups(fd, pid, dirs)
	return ok, err
}

// memberCgroups is isMember that also returns the cgroups that prove
// membership. Whether the process has exited is the pidfd's to say: a
// process whose main thread exited while other threads run shows "Z" in
// /proc/<pid>/stat, and on cgroup v1 /proc/<pid>/cgroup then shows the
// root cgroups; its live threads' cgroups place it.
func memberCgroups(fd, pid int, dirs []dirInfo) (map[string]string, bool, error) {
	if pidfdExited(fd) {
		return nil, false, nil
	}
	paths, err := readProcCgroup(pid)
	if err != nil {
		if errors.Is(err, errGone) {
			return nil, false, nil
		}
		return nil, false, err
	}
	if member(paths, dirs) {
		return paths, true, nil
	}
	if st, err := readStat(pid); err != nil || !st.Dying() {
		return paths, false, nil
	}
	for _, tp := range readThreadCgroups(pid) {
		if member(tp, dirs) {
			return tp, true, nil
		}
	}
	return paths, false, nil
}

// Contains reports whether pid is a member of one of the set's cgroups or
// their descendants (by /proc/<pid>/cgroup, or that of a live thread when
// the main thread has exited), and is false when the process has exited
// (its pidfd says so; a zombie has exited) or is gone, when pid is not
// positive, and when /proc cannot be read.
func (s *Set) Contains(pid int) bool {
	if pid <= 0 {
		return false
	}
	dirs, _ := s.resolve()
	fd, err := pidfdOpen(pid)
	if err != nil {
		return false
	}
	defer closeFd(fd)
	ok, err := isMember(fd, pid, dirs)
	return err == nil && ok
}

// guardedPid returns what a guarded pid is ("" when pid is not guarded).
func guardedPid(pid int) string {
	for _, g := range guardedPids() {
		if g.pid == pid {
			return g.what
		}
	}
	return ""
}

// KillMember kills pid only if, after a pidfd to it is open, it is a member
// of the set (see Contains); then waits until it has exited (a zombie
// counts as exited) or ctx is done. killed is false when pid is gone, has
// exited (its pidfd is readable), or is not a member; a process whose main
// thread exited while others run has not exited and is killed; the error is then nil unless some of the set's
// directories were refused (see Set). It refuses (error) a pid that is
// not positive, the calling process, its parent, or pid 1. When ctx ends
// before the process exits, killed is true and the error wraps ctx.Err().
func (s *Set) KillMember(ctx context.Context, pid int) (killed bool, err error) {
	if err := checkPid(pid); err != nil {
		return false, err
	}
	dirs, errs := s.resolve()
	if len(dirs) == 0 {
		return false, errors.Join(errs...)
	}
	fd, err := pidfdOpen(pid)
	if err != nil {
		if errors.Is(err, errGone) {
			return false, nil
		}
		return false, fmt.Errorf("kill member: %w", err)
	}
	defer closeFd(fd)
	ok, err := isMember(fd, pid, dirs)
	if err != nil {
		return false, fmt.Errorf("kill member: check pid %d: %w", pid, err)
	}
	if !ok {
		return false, errors.Join(errs...) // refused directories, if any
	}
	return killAndWait(ctx, fd, pid)
}

// KillVerified kills pid only if, after a pidfd to it is open, its start time
// (field 22 of /proc/<pid>/stat, clock ticks since boot, as runc records it)
// equals startTime; then waits until it has exited (a zombie counts as
// exited) or ctx is done. killed is false, with a nil error, when the pid is
// gone, has exited (its pidfd is readable: a zombie), or belongs to another
// process. A process whose main thread exited while other threads run
// ("Z" in /proc/<pid>/stat) has not exited: it is signalled through the
// pidfd like any other. It refuses (error) a pid
// that is not positive, the calling process, its parent, or pid 1. When ctx
// ends before the process exits, killed is true and the error wraps
// ctx.Err().
func KillVerified(ctx context.Context, pid int, startTime uint64) (killed bool, err error) {
	if err := checkPid(pid); err != nil {
		return false, err
	}
	fd, err := pidfdOpen(pid)
	if err != nil {
		if errors.Is(err, errGone) {
			return false, nil
		}
		return false, fmt.Errorf("kill verified: %w", err)
	}
	defer closeFd(fd)
	st, err := readStat(pid)
	if err != nil {
		if errors.Is(err, errGone) {
			return false, nil
		}
		return false, fmt.Errorf("kill verified: %w", err)
	}
	if st.Start != startTime || pidfdExited(fd) {
		return false, nil
	}
	return killAndWait(ctx, fd, pid)
}

func checkPid(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("kill pid %d: not a valid pid", pid)
	}
	if what := guardedPid(pid); what != "" {
		return fmt.Errorf("kill pid %d: refusing to signal %s", pid, what)
	}
	return nil
}

// killAndWait signals the verified process behind fd and waits for its exit.
func killAndWait(ctx context.Context, fd, pid int) (bool, error) {
	sent, err := pidfdKill(fd, pid)
	if err != nil || !sent {
		return false, err
	}
	return true, waitPidfd(ctx, fd, pid)
}

// Hierarchies returns the mount point of every cgroup filesystem (v1 and
// cgroup2) that is mounted at its hierarchy's root and visible, from
// /proc/self/mountinfo, in mount order.
func Hierarchies() ([]string, error) {
	t, err := loadTable(nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := range t.mounts {
		m := &t.mounts[i]
		if m.cgroup && m.root == "/" && t.visible(m.mountpoint) == m {
			out = append(out, m.mountpoint)
		}
	}
	return out, nil
}

// Procs lists, each once, the pids in the set's directories and their
// descendant cgroups; a directory that is gone is empty. It signals
// nothing, and a listed pid is a claim (it may exit and be reused at once),
// not proof. Directories Find's rules refuse are not read: they are
// returned as errors.
func (s *Set) Procs() ([]int, []error) {
	dirs, errs := s.resolve()
	seen := map[int]bool{}
	var out []int
	for _, d := range dirs {
		_ = walkCgroups(context.Background(), d.path, func(dir string) {
			pids, _ := readPids(dir)
			for _, pid := range pids {
				if !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
		})
	}
	return out, errs
}

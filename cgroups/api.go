package cgroups

// API contract for package cgroups. The implementing helper replaces the
// panics with real code and may split this file; the exported names and
// signatures below are what package shim calls.

import (
	"context"
)

// Evidence is what a container's cgroups are found from.
type Evidence struct {
	// StatePaths is runc state.json's cgroup_paths: v1 subsystem (or
	// "name=systemd") -> absolute directory; "" -> unified directory.
	StatePaths map[string]string
	// CgroupsPath is the spec's linux.cgroupsPath: a cgroupfs path such as
	// "/default/ctr" or systemd's "slice:prefix:name".
	CgroupsPath string
	// Systemd says CgroupsPath is in systemd form (options SystemdCgroup);
	// a path of the form "a:b:c" is taken as systemd form anyway.
	Systemd bool
}

// Set is one container's cgroups: one absolute directory per mounted
// hierarchy that has (or had) it. Directories that no longer exist are kept;
// every operation counts them as already released.
type Set struct {
	Dirs []string
}

// Find maps the evidence onto the cgroup filesystems mounted now (from
// /proc/self/mountinfo): every v1 hierarchy, a cgroup2 mount, or both
// (hybrid). A directory is accepted only when it lies strictly below the root
// of a mounted cgroup filesystem and does not hold (nor is an ancestor of the
// cgroup of) the calling process; rejected candidates are returned as errors
// next to the set. An empty Set with no evidence is not an error.
func Find(ev Evidence) (*Set, []error) { panic("todo") }

// Kill kills every process in the set's directories and their descendant
// cgroups (v2: cgroup.kill; else freeze, SIGKILL each member through a pidfd,
// thaw; repeated until empty) and waits until every directory is empty or
// ctx is done. It returns how many processes it signalled; the error names
// each directory that still has processes.
func (s *Set) Kill(ctx context.Context) (signalled int, err error) { panic("todo") }

// Contains reports whether pid is a member of one of the set's cgroups (by
// /proc/<pid>/cgroup), and is false when the process is gone.
func (s *Set) Contains(pid int) bool { panic("todo") }

// KillMember kills pid only if, after a pidfd to it is open, it is a member
// of the set; then waits until it has exited or ctx is done. killed is false
// when pid is gone or not a member.
func (s *Set) KillMember(ctx context.Context, pid int) (killed bool, err error) { panic("todo") }

// Remove removes the set's directories in every hierarchy, descendant
// cgroups first, with bounded retries and backoff (EBUSY while the last
// processes exit). A missing directory is success. It returns the
// directories it removed; the error names each directory left.
func (s *Set) Remove(ctx context.Context) (removed []string, err error) { panic("todo") }

// KillVerified kills pid only if, after a pidfd to it is open, its start time
// (field 22 of /proc/<pid>/stat, clock ticks since boot, as runc records it)
// equals startTime; then waits until it has exited or ctx is done. killed is
// false when the pid is gone or belongs to another process.
func KillVerified(ctx context.Context, pid int, startTime uint64) (killed bool, err error) {
	panic("todo")
}

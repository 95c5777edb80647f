// Package cgroups owns a dead container's cgroups and the processes in them:
// finding the cgroup directories from the evidence (runc's state and the
// spec's cgroupsPath, in cgroupfs or systemd "slice:prefix:name" form,
// mapped onto every mounted hierarchy: cgroup v1, v2 at any mountpoint, and
// hybrid), killing every process that is proven to belong to the container,
// waiting until they are gone, and removing the directories, descendant
// cgroups first.
//
// Evidence is runc's state (its cgroup paths) and the spec's cgroupsPath
// when absolute or in systemd form. A relative cgroupsPath is not used:
// runc resolved it against the cgroup of the shim that created the
// container, which nothing records, and against the caller's cgroup it
// would name someone else's.
//
// Proof of membership is either the process's presence in one of the
// container's cgroup directories (by /proc/<pid>/cgroup, or that of a live
// thread when the main thread has exited), or, for the init process, a pid
// whose start time matches runc's state. A pid read from a file
// (cgroup.procs, init.pid) is a claim and is never signalled on its own.
// Processes are signalled through pidfds opened before the proof is
// checked, so a reused pid is never hit, and waited for by polling those
// pidfds. Whether a process has exited is the pidfd's to say (readable
// once every thread has exited): a process whose main thread exited while
// other threads run shows "Z" in /proc/<pid>/stat and is still signalled.
// A zombie counts as exited everywhere, and so, after a short grace, does
// a process every thread of which is past the point of no return in
// do_exit (PF_EXITING): a pid namespace's init stays there until its
// namespace's last zombie is reaped. /proc/<pid>/stat is read through
// package internal/procstat, the module's one parser of it.
//
// Kernel floor: Linux 5.3 (pidfd_open, pidfd_send_signal, poll on a pidfd).
// pidfds are opened without PIDFD_NONBLOCK, which Linux 5.10 added and
// older kernels refuse with EINVAL. Before 5.3 pidfd_open fails with
// ENOSYS: nothing is signalled, and every pid that could not be opened is
// returned as an error. cgroup.kill (Linux 5.14) is used where it exists.
//
// Killing writes cgroup2's cgroup.kill first where it exists (on a hybrid
// host runc's container is in the unified hierarchy too, so that one write
// usually empties every hierarchy); for what is left it freezes the cgroups
// (v1 freezer, or v2 cgroup.freeze where cgroup.kill is missing or, in a
// threaded cgroup, refused) so nothing forks while members are listed,
// SIGKILLs each proven member, and always thaws again so that a paused
// container's processes can die. Members are listed from cgroup.procs; a
// threaded cgroup (cgroup v2) refuses that read, and its cgroup.threads is
// read instead, each thread mapped to its process (/proc/<tid>/status
// Tgid), as runc does: a threaded cgroup never reads as empty. Every wait,
// every walk of a cgroup tree and every removal is bounded by the caller's
// context (and a wait also by a small retry budget); errors name the path
// or pid.
//
// It never signals a process outside the container's cgroups, nor the
// calling process, its parent or pid 1; never touches a hierarchy's root
// cgroup or a cgroup that holds (or is an ancestor of the cgroup of) one of
// those processes; never follows a path outside a mounted cgroup filesystem
// nor descends into another mount; and never reads or removes anything in
// the task directory. It does not log: every operation returns what it did
// and its errors.
package cgroups

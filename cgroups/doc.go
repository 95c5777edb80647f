// Package cgroups owns a dead container's cgroups and the processes in them:
// finding the cgroup directories from the evidence (runc's state, else the
// spec's cgroupsPath, in cgroupfs or systemd "slice:prefix:name" form),
// killing every process that is proven to belong to the container, waiting
// until they are gone, and removing the directories in every hierarchy
// (cgroup v1, v2, and hybrid).
//
// Proof of membership is either the process's presence in one of the
// container's cgroup directories, or, for the init process, a pid whose start
// time matches runc's state. A pid read from a file is a claim and is never
// signalled on its own. Processes are signalled through pidfds opened before
// the proof is checked, so a reused pid is never hit.
//
// It never signals a process outside the container's cgroups, never touches a
// hierarchy's root cgroup or a cgroup that holds the calling process, never
// follows a path outside a mounted cgroup filesystem, and never reads or
// removes anything in the task directory.
package cgroups

// Package systemd is the end-to-end suite of the production node: the
// systemd cgroup driver under a real systemd (`make systemd`).
//
// A private systemd (harness.StartSystemd: PID 1 of its own namespaces,
// cgroup2, D-Bus, everything that could touch the host masked) runs a
// private containerd (`systemd-run -p Delegate=yes -p KillMode=process`)
// with runc's systemd cgroup driver (runtime options SystemdCgroup) and
// kubelet-style cgroupsPaths `kubepods-besteffort-pod<N>.slice:cri-containerd:<id>`:
// every container is a transient scope unit `cri-containerd-<id>.scope`
// that systemd owns. Daemons: Debian's containerd 1.6.20 with its
// containerd-shim-runc-v2, and containerd 2.4 (bin/containerd-2.4, from
// tests/daemons/build.sh) with its own.
//
// Each case breaks a task as production does (shim SIGKILL; runc state
// removed; `runtime` missing; runtime binary missing; containerd restarted
// with dead shims) and asserts, for our shim: no process, no cgroup, the
// scope unit not loaded (LoadState=not-found), no task directory and no
// runc state, and that a new container with the same id and cgroupsPath
// starts inside its own scope. Upstream's shim runs the same cases side by
// side; what it leaves goes to tests/out/systemd-side-by-side.md, not
// asserted. TestGCServiceTimer installs contrib/systemd's gc service and
// timer in the private systemd and proves a sweep deletes an orphan.
//
// The suite never skips: when it cannot run (not root, no systemd or dbus
// package, no daemon binary) it fails and says what is missing.
package systemd

// Package v2 holds the cases only the production node can run (issue 18):
// what cgroup v2 under systemd as PID 1 makes possible to assert, with our
// shim and upstream's side by side on a private containerd (tests/harness),
// with runc's cgroupfs or systemd driver (E2E_CGROUP_DRIVER):
//   - the container's cgroup had the memory and pids controllers (the
//     production layout, not a controller-less unified mount);
//   - after its shim is SIGKILLed and containerd runs the delete, the
//     container's cgroup and every descendant of it are gone, for a
//     container that made child cgroups of its own and for one that keeps
//     forking while its shim dies;
//   - cgroup.kill was written during the delete (inotify sees the write);
//   - with the systemd driver, the scope unit is gone (not even failed) and
//     the next container of the same name lands in a scope of its own.
//
// Only ours is asserted; upstream's outcome is printed beside it and
// written to E2E_OUT/v2-side-by-side.md. The suite runs inside the node
// (tests/node, `make node`); anywhere else (no cgroup2 at /sys/fs/cgroup,
// systemd not PID 1) it fails loudly, it never skips.
package v2

// Package harness drives a private containerd daemon, real runc and a shim
// under test, for the end-to-end suites (tests/e2e, tests/ops; tests/cri
// reuses its pieces) and for benchmarks.
//
// It owns:
//   - the prerequisite checks every suite makes before it starts anything
//     (CheckBinaries, CheckTools, FindBusybox; FindE2EEnv for the E2E_*
//     environment of tests/e2e and tests/ops), each failure saying what is
//     missing and how to get it;
//   - Daemon: a containerd started from a given binary with its own root,
//     state directory, gRPC and ttrpc sockets (BaseConfig) and a temp bin
//     directory that holds the shims under test by their runtime names;
//     stopped, killed and restarted with the same configuration; optionally
//     in a private mount namespace whose /sys/fs/cgroup is a pure cgroup2
//     mount; its init exits recorded from a live subscription
//     (SubscribeExits);
//   - BuildRootfs: a busybox root filesystem in a temp directory (no images,
//     no network);
//   - Container: one container started through containerd's Go client with
//     its rootfs given as a bind mount, an init with children and one exec'd
//     process, and the record of everything it owns on the machine (processes
//     by pid and start time, cgroup directories in every hierarchy, bundle,
//     work directory, runc state, shim pid and socket); optionally with an
//     OCI poststop hook that records what of the bundle it saw at each run;
//   - damage functions that break a task directory the way production does;
//   - Residue: what is left of a container after its delete, by kind, from
//     what the machine shows (MountsUnder, ContainerCgroups, CgroupPids);
//   - Cleanup: removing whatever a case left, so later cases start clean.
//
// It never asserts: it returns what it saw, and the tests decide. It never
// touches the machine's own containerd (/run/containerd/containerd.sock,
// /var/lib/containerd), and it never signals a process without first
// verifying its start time through a pidfd.
package harness

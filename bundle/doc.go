// Package bundle owns a runc-v2 task directory as the delete path sees it:
// reading it best-effort and taking it apart without ever deleting through a
// mount point.
//
// It owns:
//   - validating the task id and namespace before any path is built from them
//     (containerd's identifier rule: no "..", no "/", not empty, at most 76
//     characters);
//   - CheckTaskDir: the positive evidence that a directory is a runc v2 task
//     directory, without which the delete path (package deletion) and gc
//     (package ops) remove nothing in it: containerd's layout
//     (<state>/io.containerd.runtime.v2.task/<ns>/<id>, state not root), or
//     only the names containerd and the runc shim write there, each of its
//     type, with the work link, address or bootstrap.json (evidence.go);
//   - Load: every file of the task directory as every supported containerd
//     writes it (runtime, init.pid, options.json, config.json, the work
//     link; address (1.6/1.7) or bootstrap.json and the s link (2.x);
//     shim-binary-path; exit.json (2.4)) and runc's own
//     state.json, each of which may be missing, empty or garbage; every such
//     problem is recorded in Bundle.Problems and none is fatal (the one
//     exception is an empty `runtime`, which is what containerd writes when
//     no binary name is configured, and so names nothing). Files are read
//     with O_NOFOLLOW, must be regular and are size-bounded. runc's state is
//     looked for under the runc root also when the task directory is gone;
//   - the readers of the files other packages need without a whole Load:
//     ReadRuncState (runc's state.json), ReadShimBinaryPath
//     (shim-binary-path) and ReadSandbox, with Load's checks (Load uses
//     them), so that no package reads those files its own way; and
//     TaskStateDirName, the one spelling of
//     "io.containerd.runtime.v2.task";
//   - UnmountAll: unmounting every mount at or below a path, deepest first,
//     with a detach fallback, the mounts taken from a reading of the mount
//     table (package mounttable; one gc sweep shares one) and each
//     confirmed gone on the live system;
//   - RemoveAll: removing a tree while refusing to cross a mount point, found
//     by the mount table (read before the walk; afresh where openat2 is
//     unavailable), by a directory's st_dev, and by openat2
//     RESOLVE_NO_XDEV; the walk is file-descriptor-relative and never
//     follows a symlink;
//   - RemoveDeadSocket: removing a dead shim's socket named in `address`
//     (1.6/1.7) or bootstrap.json (2.x), only when it is named as
//     containerd names them (64 hex digits) and lies directly in the shim
//     socket directory (the default, or one only root can write), after a
//     connect that is refused; a socket that accepts is left;
//   - Guard: a file in rootfs, written through a detached clone of the task
//     directory, that stops containerd 2.x's own removal of a bundle left
//     in place before it crosses a mount (a rootfs that is not a directory
//     is replaced by one);
//   - ProbeSocket: what a connect says of a socket's listener (live, dead,
//     missing, or unknown), for RemoveDeadSocket and package liveness.
//
// runc's state.json is decoded into RuncState (runc's own field names, the
// few fields the delete path uses) rather than through libcontainer, which
// would weigh on every running shim; the tests hold RuncState to
// libcontainer.State and to a real runc's output.
//
// It never signals a process, never writes to a cgroup, never runs the
// runtime binary, and never removes anything through a mount point: a path
// that is (or may be) a mount point is left in place and named in the error.
package bundle

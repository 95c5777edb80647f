// Package cri drives a private containerd with its CRI plugin the way
// kubelet does, for the Kubernetes end-to-end test of the robust shim
// (cri_test.go, run by `go test ./tests/cri/` or `make cri`).
//
// It owns:
//   - the containerd configuration of the runtime handlers, rendered once
//     (HandlerConfig, RuntimeClassManifest) for the daemons under test and
//     for the README snippet, so that the documented set-up is the tested
//     one;
//   - Daemon: a containerd started from a given binary with the CRI plugin
//     enabled and everything private (root, state, sockets, empty CNI
//     directories, a bin directory first on its PATH holding the shims),
//     with a containerd client and CRI runtime and image clients; killed and
//     restarted with the same configuration;
//   - BuildImage and Daemon.ImportImage: a one-layer OCI image made from
//     busybox-static (no registry), imported and unpacked into k8s.io;
//   - Pod: a pod sandbox and two containers run through CRI under a runtime
//     handler, and the record of everything its tasks own on the machine
//     (task and work directories, runc state, processes by pid and start
//     time, cgroups in every hierarchy, the pod's shim and its socket);
//   - Pod.Residue and Pod.Cleanup: what is left of a pod after its removal,
//     and removing it whatever a case did or failed to do.
//
// It builds on tests/harness (Proc, Poll, WaitGone, Residue, BuildRootfs,
// BaseConfig, SubscribeExits, the mount and cgroup readers and the
// prerequisite checks) and, like it, never asserts: it returns what it saw and the tests decide.
// It never touches the machine's own containerd, and never signals a
// process without verifying its start time through a pidfd.
package cri

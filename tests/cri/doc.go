// Package cri drives a private containerd with its CRI plugin the way
// kubelet does, for the Kubernetes end-to-end test of the robust shim
// (cri_test.go, run by `go test ./tests/cri/` or `make cri`).
//
// It owns:
//   - the containerd configuration of the runtime handlers, rendered once
//     (HandlerConfig, RuntimeClassManifest) for the daemons under test and
//     for the README snippets, so that the documented set-up is the tested
//     one: configuration version 2 (CRI plugin io.containerd.grpc.v1.cri)
//     on containerd 1.6 and 1.7, version 3 (io.containerd.cri.v1.runtime
//     and io.containerd.cri.v1.images) on 2.x, each with the runtime type
//     and the runtime path set-ups;
//   - Daemon: a containerd started from a given binary with the CRI plugin
//     enabled and everything private (root, state, sockets, empty CNI
//     directories — pods use the host's network, so no CNI plugin is
//     needed —, a bin directory first on its PATH holding our shim and that
//     line's upstream shim, which ours finds next to itself and execs),
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

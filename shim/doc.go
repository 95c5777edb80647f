// Package shim is the containerd-shim-runc-v2-robust binary: upstream's runc
// task service, unchanged, behind containerd's shim framework, with a
// shim.Manager of ours that delegates Name and Start to upstream's runc
// manager and replaces Stop, the `delete` command, with a best-effort delete
// path (delete.go) that reads top to bottom as named steps.
//
// It owns the order of the steps, the decision to exit non-zero (only when a
// mount under the bundle could not be removed or a proven container process
// survived), the DeleteResponse and the report.
//
// It never parses bundle files itself (package bundle does), never walks
// cgroup filesystems itself (package cgroups does), and never forks
// upstream's task service.
package shim

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
// It also owns the operators' side (cli.go, gc.go, liveness.go, record.go,
// metrics.go): routing the command line (Main), `delete` run by hand from
// any directory (the task found under the state directory; a live shim
// refused unless -force), the `gc` sweep of orphaned tasks and its report of
// residue outside task directories (reported, never deleted), the delete
// records in text and JSON, and the Prometheus textfile metrics. containerd's
// own `delete` (it passes -address) goes through the shim framework as
// before: same stdout, same short report on stderr, never refused.
//
// It never parses bundle files itself (package bundle does; gc only checks
// which files a task directory holds, reads its shim-binary-path, and, for
// the residue report, the init pid in runc's state.json of a task that has
// no task directory), never kills or
// removes cgroups itself (package cgroups does; gc only lists cgroup
// directories and reads their cgroup.procs to report residue), never
// signals a process outside the delete path, and never forks upstream's
// task service.
package cli

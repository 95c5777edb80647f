// Package ops is the operators' side of the shim: RunDelete, the one way
// a delete runs and is recorded, whoever runs it (containerd, a person, gc):
// deletion.Delete, its structured record (DeleteRecord) and the Prometheus
// textfile metrics (Metrics); the one table from how a delete ended to an
// exit status (Result.ExitStatus); `gc`, the sweep of orphaned runc v2
// task directories (GC, which reads as: sweep, which classifies every task
// directory; the orphans' deletes, in parallel with a bound, a progress
// line on a terminal; the residue scan, reported and never deleted; the
// metrics); and where containerd keeps its task directories
// (LoadContainerdConfig, a reader of the top-level keys of containerd's
// configuration, and ChooseStateDir).
//
// Files: gc.go (options, report types, GC), sweep.go, gcdelete.go,
// residue.go and systemd.go (the residue scans), render.go (the gc
// report's text and JSON), delete.go (RunDelete, exit statuses),
// record.go, metrics.go, progress.go, config.go.
//
// It reads a task directory, its shim-binary-path and runc's state.json
// only through package bundle (Load, ReadRuncState), and /proc only
// through liveness. It never deletes anything itself: every task directory goes through
// deletion.Delete (RunDelete), and gc's only when bundle.CheckTaskDir finds
// evidence that it is one and liveness says its shim is dead. It never
// touches residue outside task directories, never writes containerd's
// configuration, never reads a configuration file that is not a regular
// file of bounded size, and writes the metrics only relative to their
// directory, through no symbolic link, in a directory root owns.
package ops

// Package ops is the operators' side of the shim: `gc`, the sweep of
// orphaned runc v2 task directories (GC: deletes run in parallel with a
// bound, a progress line on a terminal, residue reported and never
// deleted); the structured record of every delete (DeleteRecord) and the
// Prometheus textfile metrics (Metrics); and where containerd keeps its
// task directories (LoadContainerdConfig, a reader of the top-level keys
// of containerd's configuration, and ChooseStateDir).
//
// It never deletes anything itself: every task directory goes through
// deletion.Delete, and only when bundle.CheckTaskDir finds evidence that it
// is one and liveness says its shim is dead. It never touches residue
// outside task directories, never writes containerd's configuration, never
// reads a configuration file that is not a regular file of bounded size,
// and writes the metrics only relative to their directory, through no
// symbolic link, in a directory root owns.
package ops

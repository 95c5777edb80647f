// Package deletion is the delete path: one task's cleanup, step by step,
// and what it answers.
//
// The steps, their order and what each does are listed once, in the
// documentation of Delete; everything else (this text, each step's
// function, the README) names a step as the report does (StepResolve,
// StepLoad, ...) and points there.
//
// It owns:
//   - the order of the steps and what each hands to the next (delete.go),
//     and the whole delete's deadline (DefaultTimeout);
//   - resolve (resolve.go): which directory is the task's (by hand the
//     working directory never is), its lock (bounded), and that no step
//     runs without bundle.CheckTaskDir's positive evidence that it is a
//     runc v2 task directory;
//   - what a delete does about the task's shim (shim.go, Request.LiveShim):
//     a shim that answers liveness.AskShim is never signalled by
//     containerd's delete, which then does only upstream's part; gc and a
//     delete by hand without -force refuse a live shim (ErrShimAlive)
//     under the lock, after the one load: it answers, is hung, or
//     liveness.Prober finds its process (the one live-shim check of gc and
//     of a delete by hand; a gc sweep shares one Prober, Request.Prober);
//     a hung shim is killed only with proof;
//   - which evidence is trusted: what the bundle says of the container's
//     cgroups and systemd unit, worked out once (evidence.go); runc's
//     state only when its cgroups are the bundle's, an init only with its
//     recorded start time and inside the container's cgroups (load.go,
//     kill.go);
//   - when the runtime binary runs (`runc delete --force`: poststop hooks,
//     a systemd unit, Intel RDT, an unreadable state; runtime.go) and when
//     the delete finishes natively instead;
//   - a CRI sandbox's dead member containers, only when its shim was
//     found dead or hung (sandbox.go); the systemd scope unit (systemd.go);
//   - which mount table readings the steps use: afresh, or the one a gc
//     sweep shares (Request.Mounts);
//   - the Report (report.go) and the DeleteResponse containerd decodes
//     (response.go).
//
// It leaves each concern to its package: reading the task directory,
// unmounting and mount-safe removal to bundle; finding, killing and
// removing cgroups to cgroups; whether a shim is alive and which process it
// is to liveness; systemd units to systemdunit. It never removes a file
// itself, never signals a process that is not proven the container's (or
// the task's hung shim), never talks to containerd, and never records or
// counts a delete (that is package ops). A task directory that still holds
// a mount or a surviving process is left, said so (ErrUnsafe), and guarded
// against containerd's own removal.
package deletion

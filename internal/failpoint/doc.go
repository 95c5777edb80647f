// Package failpoint injects faults into the product binary for tests only,
// as containerd's failpoint shim does: built with the tag `failpoint`,
// $CONTAINERD_SHIM_ROBUST_FAILPOINTS names the points that fire; without
// the tag every function here is a constant that the compiler removes, and
// the product binary holds none of it.
//
// $CONTAINERD_SHIM_ROBUST_FAILPOINTS is a comma-separated list of
// NAME=ARG entries; what ARG means is up to the point:
//
//   - unmount=SUBSTR: umount(2) of a mount point whose path contains SUBSTR
//     fails with EPERM (a mount that cannot be unmounted);
//   - kill-at=STEP: the delete process SIGKILLs itself when step STEP
//     begins ("STEP" is a delete path step name, or "end" after the last).
//
// It never fires in a binary built without the tag.
package failpoint

// Package install owns `containerd-shim-runc-v2-robust install` and
// `uninstall`: putting our shim into containerd's configuration the way
// kata-deploy and `nvidia-ctk runtime configure` do, and taking it out
// again byte-for-byte.
//
// What it owns:
//   - reading containerd's main configuration file with go-toml/v2 (the
//     parser containerd uses) and its version: 2 puts CRI runtimes under
//     plugins."io.containerd.grpc.v1.cri", 3 and 4 under
//     plugins."io.containerd.cri.v1.runtime"; version 1 is refused;
//   - one drop-in file of ours: in the directory the main file already
//     imports with a glob (conf.d on containerd 2.3/2.4's defaults), else
//     next to the main file and added to its `imports` (the only edit ever
//     made to a file of containerd's; the original bytes are kept in the
//     state directory and put back by uninstall). containerd 1.x replaces a
//     plugin's table whole with an imported file's, so the drop-in carries
//     the CRI plugin table as the files before it set it, plus our runtime;
//   - the state directory (<host-root>/var/lib/containerd-shim-runc-v2-robust/install):
//     what install wrote, so that uninstall and a repeated install know;
//   - with --replace-shim-binary (--mode default only: a RuntimeClass is
//     an opt-in per pod, the replaced binary serves every runc v2 task,
//     so with --mode runtime-class it is refused): on a Debian-family
//     host (dpkg-divert in the host's root), `dpkg-divert --local
//     --rename --divert <path>.distrib --add <path>` of upstream's binary
//     (--upstream-shim, /usr/bin/containerd-shim-runc-v2 as containerd's
//     package puts it; run with --root <host-root> under --host-root),
//     our binary (--shim-path's bytes) written beside it and renamed into
//     its place (mode 0755), then `<path> -v` checked to name
//     <path>.distrib as its delegate (delegate.DivertedName); ctr,
//     nerdctl and Docker then run us too. Recorded in the state
//     directory; uninstall removes ours and the diversion (upstream's
//     binary renamed back: same bytes, same mode); any failure does so
//     too;
//   - restarting containerd (`systemctl restart containerd`, through the
//     host's mount namespace with --host-root) and checking that it
//     answers on its socket, that `containerd config dump` shows the
//     runtime, that our binary finds its delegate and (unless
//     --no-container-check) that a container starts with it: containerd's
//     own ctr (beside --containerd, else on PATH; in the host's root) runs
//     a throwaway container in namespace robust-install-check with
//     `--runtime <shim-path>` from a rootfs directory whose only file is a
//     copy of our static binary run as `-h` (no image, no snapshot),
//     bounded by 30 s, then removes container, task and namespace. The
//     same command on 1.6, 1.7 and 2.x. A CRI handler is not selectable
//     from ctr: in runtime-class mode the check runs our binary with
//     default runc options, the handler's options are checked by config
//     dump only. No ctr: the check fails saying so. On any failure every
//     file is put back and containerd restarted again.
//
// What it never does: edit a table of containerd's main file (only the
// top-level `imports` line), touch a file it did not write or back up,
// remove upstream's shim (a diversion only renames it), divert a file
// diverted already or whose .distrib exists, or restart containerd when
// nothing changed or with --no-restart / --dry-run.
package install

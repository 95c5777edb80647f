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
//   - restarting containerd (`systemctl restart containerd`, through the
//     host's mount namespace with --host-root) and checking that it
//     answers on its socket, that `containerd config dump` shows the
//     runtime, and that our binary finds its delegate; on any failure
//     every file is put back and containerd restarted again.
//
// What it never does: edit a table of containerd's main file (only the
// top-level `imports` line), touch a file it did not write or back up,
// remove upstream's shim, or restart containerd when nothing changed or
// with --no-restart / --dry-run. --replace-shim-binary (a dpkg-divert of
// upstream's binary) is refused where there is no dpkg, and is not
// implemented yet elsewhere either (it says so).
package install

// Package deb is the package test of issue 20 item 3 (`make deb-e2e`): the
// amd64 .deb that tools/release.sh builds is installed, reinstalled and
// purged with dpkg, for real, in an isolated Debian 12 root, and what it
// did is checked.
//
// The isolated root is this machine's own root filesystem seen through an
// overlayfs in a private mount namespace (`unshare -m`, propagation
// private): lower dir "/" (the root filesystem only: overlayfs does not
// cross mount points, so the host's /proc, /sys, /dev, /run are not in it),
// upper and work dirs on a tmpfs that exists only in that namespace, a
// fresh proc, a bind of /dev, tmpfs on /run (no /run/systemd/system: no
// systemd runs) and /tmp. dpkg runs chrooted in the merged dir through
// nsenter. The overlay's upper dir is the exact record of what dpkg and
// the maintainer scripts changed; it is read through /proc/<pid>/root of
// the namespace's holder process. The host's root is never written: the
// test asserts the host's dpkg status is unchanged.
//
// It owns: the install (binary static and runnable, gc service and timer
// present and not enabled, docs, status "install ok installed",
// /etc/containerd untouched), a second install over itself, an upgrade
// (the same package with a higher version), the purge (every file of
// `dpkg -L` gone, nothing in /var/lib/dpkg/info, nothing left in the upper
// dir but dpkg's own bookkeeping), a purge without systemd after the
// operator enabled the gc timer (no link left), and that mutated packages
// (a postinst that enables the timer, one that leaves a file after purge,
// one that edits /etc/containerd, a prerm that needs systemd) are caught.
// It never skips: no root, no unshare, nsenter, overlayfs or dpkg, or no
// .deb is a failure.
package deb

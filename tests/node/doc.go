// Package node boots the production node (issue 18) and runs suites inside
// it: Debian 12 with systemd as PID 1 on the unified cgroup v2 hierarchy,
// Debian's kernel, containerd 1.6.20 and runc from Debian's packages, built
// by image.sh and booted with qemu-system-x86_64 (KVM where /dev/kvm is
// present, software emulation, TCG, where it is not).
//
// It owns:
//   - Image: the image built by image.sh from Debian's packages, cached
//     under a directory keyed by the hash of the recipe (rebuilt only when
//     image.sh changes);
//   - Share: the host directory the node mounts at /share over 9p: the
//     binaries under test, suite.sh (the steps to run) and out/ (console
//     log, each step's status, tables the suites write);
//   - Boot: one boot of the node that runs a Suite as the systemd unit
//     robust-suite.service, streams the serial console, and powers off. The
//     disk is in snapshot mode (every boot starts from the unchanged image),
//     the node has no network card (-nic none).
//
// Boot fails loudly, with the tail of the console, when the node does not
// reach the suite within BootTimeout (a hung boot), when the suite does not
// finish within its timeout, or when the unit left no status (it failed
// before its script ran). A step that fails is reported as failed, never as
// skipped. It never asserts what a suite's steps test: the steps are test
// binaries that assert for themselves.
package node

// Command containerd is containerd 2.4.x built from the module graph (the
// version pinned in go.mod), with upstream's runc shim of the same version
// (tools.go): a daemon of the e2e, ops, CRI and systemd suites and the
// delegate and baseline shim beside it. tests/daemons/build.sh builds both.
package main

// Command containerd is containerd 1.7.x built from the module graph (the
// version pinned in go.mod), so that the e2e suite can run against a 1.7
// daemon as well as Debian's 1.6. Build it with `make containerd17`.
package main

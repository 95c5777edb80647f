// Command containerd-shim-runc-v2-robust is containerd's runc v2 shim
// (upstream's task service, unchanged) with a delete path that cleans up
// after a dead shim whatever is missing or corrupt, and an operator's `gc`.
// containerd runs it as the runtime type io.containerd.runc.v2-robust, or
// through runtime_path with io.containerd.runc.v2. main is one call to
// shim.Main; everything else lives in package shim and the packages it
// uses (bundle, cgroups).
package main

// Command containerd-shim-runc-v2-robust is a drop-in for containerd's runc
// v2 shim: its `delete` (what containerd runs after a shim died) cleans up
// whatever is missing or corrupt, `gc` sweeps orphaned tasks, and every
// other command is handed by execve to upstream's containerd-shim-runc-v2
// that came with the user's containerd (package delegate). containerd runs
// it as the runtime type io.containerd.runc.v2-robust, through
// runtime_path, or installed under upstream's own name. main is one call
// to cli.Main; the command line lives in package cli, the delete path in
// package deletion, gc and the reports in package ops.
package main

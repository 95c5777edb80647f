// Package delegate owns finding upstream's runc shim (containerd-shim-runc-v2,
// the one that came with the user's containerd) and handing a command over
// to it by execve: same arguments after the program name, same stdin,
// environment and working directory. Every shim command that is not ours
// (start, -info, -v of the delegate, and so the long-running task service
// that start spawns) runs as upstream ships it.
//
// The delegate is, in order: $CONTAINERD_SHIM_ROBUST_DELEGATE (an absolute
// path), else containerd-shim-runc-v2 next to this binary, else
// containerd-shim-runc-v2 on $PATH (containerd's PATH: its environment
// reaches its shims). A candidate that is this very binary (same file as
// /proc/self/exe) is skipped: our binary may be installed under upstream's
// name, and must never exec itself. Where that candidate is named
// containerd-shim-runc-v2, containerd-shim-runc-v2.distrib in the same
// directory (DivertedName: where `dpkg-divert --local --rename`, and so
// `install --replace-shim-binary`, moves upstream's binary) is tried next.
//
// It never parses the shim's flags, never reads a task directory and never
// runs anything but the delegate.
package delegate

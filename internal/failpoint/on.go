//go:build failpoint

package failpoint

import (
	"os"
	"strings"
	"syscall"
)

// Enabled is true: the binary was built with the failpoint tag.
const Enabled = true

// Env names the failpoints that fire.
const Env = "CONTAINERD_SHIM_ROBUST_FAILPOINTS"

// Arg returns the argument of failpoint name and whether it is set in $Env.
func Arg(name string) (string, bool) {
	for _, e := range strings.Split(os.Getenv(Env), ",") {
		if k, v, ok := strings.Cut(e, "="); ok && k == name {
			return v, true
		} else if e == name {
			return "", true
		}
	}
	return "", false
}

// KillAt SIGKILLs this process when $Env holds kill-at=step: a delete cut
// short at that point, as containerd's timeout or a node crash cuts it.
func KillAt(step string) {
	if v, ok := Arg("kill-at"); ok && v == step {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

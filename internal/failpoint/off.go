//go:build !failpoint

package failpoint

// Enabled is false: the binary was built without the failpoint tag.
const Enabled = false

// Arg returns the argument of failpoint name and whether it is set; always
// ("", false) without the failpoint tag.
func Arg(name string) (string, bool) { return "", false }

// KillAt does nothing without the failpoint tag.
func KillAt(step string) {}

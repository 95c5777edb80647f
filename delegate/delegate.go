package delegate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvDelegate names the delegate explicitly: an absolute path to
// upstream's containerd-shim-runc-v2.
const EnvDelegate = "CONTAINERD_SHIM_ROBUST_DELEGATE"

// BinaryName is upstream's runc shim binary, as every containerd package
// installs it.
const BinaryName = "containerd-shim-runc-v2"

// DivertedName is upstream's binary as `dpkg-divert --local --rename`
// leaves it by default (`install --replace-shim-binary`): BinaryName +
// ".distrib", in BinaryName's directory. Find tries it only beside a
// BinaryName that is this very binary.
const DivertedName = BinaryName + ".distrib"

// selfExe is this process's executable; tests point it elsewhere.
var selfExe = "/proc/self/exe"

// NotFoundError says where Find looked. Its message is one line.
type NotFoundError struct {
	Looked []string // each candidate and why it was not taken
}

func (e *NotFoundError) Error() string {
	return "upstream's runc shim (" + BinaryName + ") not found: " + strings.Join(e.Looked, "; ") +
		" (install containerd's " + BinaryName + ", or set " + EnvDelegate + " to its absolute path)"
}

// Find returns the delegate's absolute path. When $EnvDelegate is set, it
// is the only candidate: it must be absolute, executable and not this
// binary. Otherwise BinaryName next to this binary, then on $PATH, each
// skipped when it is this binary or not an executable file; where such a
// BinaryName is this binary (ours installed under upstream's name with
// dpkg-divert), DivertedName in the same directory is tried next, before
// any later candidate. The error is a *NotFoundError naming every place
// looked at.
func Find() (string, error) {
	self, selfErr := os.Stat(selfExe)
	looked := &NotFoundError{}
	// try returns "" when p is taken, else why not, recorded in looked.
	try := func(p, source string) string {
		why := check(p, self, selfErr)
		if why != "" {
			looked.Looked = append(looked.Looked, fmt.Sprintf("%s %s %s", source, p, why))
		}
		return why
	}
	// take is try, then, when p is this binary under BinaryName, the
	// diverted upstream beside it; it returns the path taken or "".
	take := func(p, source string) string {
		why := try(p, source)
		switch {
		case why == "":
			return p
		case why != whySelf || filepath.Base(p) != BinaryName:
			return ""
		}
		if d := filepath.Join(filepath.Dir(p), DivertedName); try(d, "diverted beside it:") == "" {
			return d
		}
		return ""
	}

	if env, ok := os.LookupEnv(EnvDelegate); ok && env != "" {
		if !filepath.IsAbs(env) {
			looked.Looked = append(looked.Looked, fmt.Sprintf("$%s=%q is not an absolute path", EnvDelegate, env))
			return "", looked
		}
		if try(filepath.Clean(env), "$"+EnvDelegate) == "" {
			return filepath.Clean(env), nil
		}
		return "", looked
	}

	if exe, err := os.Readlink(selfExe); err == nil && filepath.IsAbs(exe) {
		if p := take(filepath.Join(filepath.Dir(exe), BinaryName), "next to this binary:"); p != "" {
			return p, nil
		}
	}
	seen, onPath := map[string]bool{}, false
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // "" and relative entries mean the working directory: never
		}
		p := filepath.Join(dir, BinaryName)
		if seen[p] {
			continue
		}
		seen[p] = true
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		onPath = true
		if p := take(p, "on $PATH:"); p != "" {
			return p, nil
		}
	}
	if !onPath {
		looked.Looked = append(looked.Looked, fmt.Sprintf("no %s on $PATH (%s)", BinaryName, os.Getenv("PATH")))
	}
	return "", looked
}

// whySelf is check's answer for this very binary.
const whySelf = "is this binary"

// check returns "" when p is an executable regular file that is not this
// binary, else why not.
func check(p string, self os.FileInfo, selfErr error) string {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "does not exist"
	case err != nil:
		return err.Error()
	case !st.Mode().IsRegular():
		return "is not a regular file"
	case st.Mode().Perm()&0o111 == 0:
		return "is not executable"
	case selfErr != nil:
		// Without knowing ourselves we cannot rule out exec'ing ourselves.
		return "cannot be told apart from this binary: " + selfErr.Error()
	case os.SameFile(st, self):
		return whySelf
	}
	return ""
}

// Exec replaces this process with the delegate at path, with argv[0] set
// to path, the given arguments (without the program name), and this
// process's environment, stdin and working directory. It returns only on
// failure.
func Exec(path string, args []string) error {
	argv := append([]string{path}, args...)
	if err := unix.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

package harness

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// What a suite checks on the machine before it starts anything. Each error
// names what is missing and, in parentheses, the suite's own hint how to
// get it; the suites fail with it, they never skip.

// SearchPath is where a daemon, after its own bin directory, and so every
// shim, finds runc and the mount tools: this process's PATH and the usual
// system directories.
func SearchPath() string {
	return os.Getenv("PATH") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// FindTool returns the first executable file called name in SearchPath.
func FindTool(name string) (string, error) {
	for _, dir := range strings.Split(SearchPath(), ":") {
		if p := filepath.Join(dir, name); Executable(p) == nil {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// CheckTools fails at the first of names not in SearchPath:
// "NAME not found on PATH (hint)".
func CheckTools(hint string, names ...string) error {
	for _, name := range names {
		if _, err := FindTool(name); err != nil {
			return fmt.Errorf("%s not found on PATH (%s)", name, hint)
		}
	}
	return nil
}

// Executable fails unless p is an executable file.
func Executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// Binary is one executable a suite needs.
type Binary struct {
	What string // what it is, for the error: "containerd", "our shim"
	Path string
	Hint string // how to get it
}

// CheckBinaries fails at the first of bs that is not an executable file:
// "WHAT: error (hint)".
func CheckBinaries(bs ...Binary) error {
	for _, b := range bs {
		if err := Executable(b.Path); err != nil {
			return fmt.Errorf("%s: %w (%s)", b.What, err, b.Hint)
		}
	}
	return nil
}

// FindBusybox returns path, or busybox on PATH when path is "", once it is
// known to be statically linked: a container's rootfs holds busybox alone,
// without a dynamic loader. It fails with "busybox not found (notFound)" or
// "busybox PATH: error (notStatic)".
func FindBusybox(path, notFound, notStatic string) (string, error) {
	if path == "" {
		p, err := exec.LookPath("busybox")
		if err != nil {
			return "", fmt.Errorf("busybox not found (%s)", notFound)
		}
		path = p
	}
	if err := StaticBinary(path); err != nil {
		return "", fmt.Errorf("busybox %s: %w (%s)", path, err, notStatic)
	}
	return path, nil
}

// StaticBinary fails for a dynamically linked ELF (one with a program
// interpreter) and for a file that is not ELF.
func StaticBinary(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}

// E2EEnv is the machine as tests/e2e and tests/ops find it, through the same
// environment variables:
//
//	E2E_CONTAINERD     containerd binary (default /usr/bin/containerd)
//	E2E_SHIM           our shim (default bin/containerd-shim-runc-v2-robust)
//	E2E_UPSTREAM_SHIM  upstream's shim of the same containerd line, also our
//	                   delegate (default: containerd-shim-runc-v2 next to
//	                   the containerd binary, as every containerd installs it)
//	E2E_BUSYBOX        static busybox (default: busybox on PATH)
type E2EEnv struct {
	RepoRoot   string // two levels above the working directory, tests/NAME
	Containerd string
	Busybox    string
	// The shims are found but not checked: each suite checks those it runs.
	Ours, Upstream string
}

// FindE2EEnv checks that this process runs as root, that containerd is an
// executable file, that busybox is static and that tools are in
// SearchPath, and finds the shims.
func FindE2EEnv(tools ...string) (E2EEnv, error) {
	if os.Geteuid() != 0 {
		return E2EEnv{}, errors.New("the suite needs root (real mounts, cgroups, containerd)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return E2EEnv{}, err
	}
	env := E2EEnv{RepoRoot: root, Containerd: EnvOr("E2E_CONTAINERD", "/usr/bin/containerd")}
	if err := CheckBinaries(Binary{What: "containerd", Path: env.Containerd, Hint: "install Debian's containerd, or set E2E_CONTAINERD"}); err != nil {
		return E2EEnv{}, err
	}
	if env.Busybox, err = FindBusybox(os.Getenv("E2E_BUSYBOX"), "install busybox-static, or set E2E_BUSYBOX", "install busybox-static"); err != nil {
		return E2EEnv{}, err
	}
	if err := CheckTools("install runc / util-linux", tools...); err != nil {
		return E2EEnv{}, err
	}
	env.Ours = EnvOr("E2E_SHIM", filepath.Join(root, "bin/containerd-shim-runc-v2-robust"))
	env.Upstream = EnvOr("E2E_UPSTREAM_SHIM", filepath.Join(filepath.Dir(env.Containerd), "containerd-shim-runc-v2"))
	return env, nil
}

// EnvOr is the environment variable key, or def when it is unset or empty.
func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

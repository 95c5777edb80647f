package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Size limits for the files Load reads: anything larger is garbage (or a
// trap such as a link to /dev/zero, which O_NOFOLLOW already refuses).
const (
	maxSmallFile = 64 << 10 // runtime, init.pid, options.json, address
	maxJSONFile  = 16 << 20 // config.json, state.json
)

// Names used in Problem.What besides the task directory's file names.
const (
	whatTaskDir = "task directory"
	whatState   = "state.json"
	whatBinary  = "runtime binary"
)

// stateFile is the name of runc's state file in its state directory.
const stateFile = "state.json"

// TaskStateDirName is the directory of containerd's v2 runtime plugin
// under containerd's state directory (<state>/io.containerd.runtime.v2.task
// holds <namespace>/<id> task directories) and under its root directory
// (where the work link of a task directory points). It is the one
// spelling of the name in this module.
const TaskStateDirName = "io.containerd.runtime.v2.task"

// runcRootDefault is DefaultRuncRoot; tests point it at a temporary runc
// root to exercise the missing-bundle path.
var runcRootDefault = DefaultRuncRoot

// Load reads the task directory at path for namespace/id best-effort.
// It returns an error only when id or namespace is invalid or the base name
// of path is not id; everything else is recorded in Bundle.Problems, and
// nothing is created, changed or removed.
//
// Edge cases: a relative path is made absolute against the working
// directory. A missing task directory (or one whose parent is not a
// directory) sets Missing and still fills RuncRoot (the default), StateDir
// and State, because runc's state may outlive the bundle. A path that
// exists but is not a directory is one Problem ("task directory") and no
// file in it is read. Files are opened with O_NOFOLLOW and must be regular
// files of bounded size: a symlink, FIFO or device in their place is a
// Problem, never followed or read. init.pid must hold exactly a positive
// decimal integer (go-runc's ReadPidFile: no trailing newline).
func Load(path, namespace, id string) (*Bundle, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("load bundle: %w", err)
	}
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("load bundle: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load bundle %q: %w", path, err)
	}
	if filepath.Base(abs) != id {
		return nil, fmt.Errorf("load bundle %s: base name is not task id %q", abs, id)
	}

	b := &Bundle{Path: abs, Namespace: namespace, ID: id}
	readFiles := true
	switch st, err := os.Stat(abs); {
	case err == nil && !st.IsDir():
		b.problem(whatTaskDir, fmt.Errorf("%s is not a directory (%s)", abs, st.Mode().Type()))
		readFiles = false
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		b.Missing = true
		readFiles = false
	default:
		// Unreadable for another reason (EACCES...): try the files anyway,
		// each will say what is wrong.
		b.problem(whatTaskDir, err)
	}

	var fileRuntime string
	if readFiles {
		fileRuntime = b.readRuntime()
		b.readInitPid()
		b.readOptions()
		b.readSpec()
		b.readWork()
		b.readAddress()
		b.readSocketDir()
		b.readShimBinaryPath()
		b.readExit()
		b.readSandbox()
	}
	if b.SocketDir == "" {
		b.SocketDir = DefaultSocketDir
	}
	b.chooseRuntime(fileRuntime)
	b.chooseRuncRoot()
	b.StateDir = filepath.Join(b.RuncRoot, namespace, id)
	st, err := ReadRuncState(b.RuncRoot, namespace, id)
	if err != nil {
		b.problem(whatState, err)
	}
	b.State = st
	return b, nil
}

func (b *Bundle) problem(what string, err error) {
	b.Problems = append(b.Problems, Problem{What: what, Err: err})
}

func (b *Bundle) file(name string) string { return filepath.Join(b.Path, name) }

// readRuntime returns the binary named by `runtime`, "" when it names none.
func (b *Bundle) readRuntime() string {
	data, err := readRegular(b.file(RuntimeFile), maxSmallFile)
	if err != nil {
		b.problem(RuntimeFile, err)
		return ""
	}
	name := strings.TrimSpace(string(data))
	if len(data) == 0 {
		// containerd writes options.BinaryName verbatim, so an empty file
		// is the normal "use the default" case.
		return ""
	}
	if err := checkName(name); err != nil {
		b.problem(RuntimeFile, fmt.Errorf("%s: not a binary name: %w", b.file(RuntimeFile), err))
		return ""
	}
	return name
}

func (b *Bundle) readInitPid() {
	p := b.file(InitPidFile)
	data, err := readRegular(p, maxSmallFile)
	if err != nil {
		b.problem(InitPidFile, err)
		return
	}
	pid, err := strconv.Atoi(string(data))
	switch {
	case err != nil:
		b.problem(InitPidFile, fmt.Errorf("%s: not a pid: %.40q", p, data))
	case pid <= 0 || pid > math.MaxInt32:
		b.problem(InitPidFile, fmt.Errorf("%s: pid %d out of range", p, pid))
	default:
		b.InitPid = pid
	}
}

func (b *Bundle) readOptions() {
	p := b.file(OptionsFile)
	var opts Options
	if err := readJSONObject(p, maxSmallFile, &opts); err != nil {
		b.problem(OptionsFile, err)
		return
	}
	b.Options = &opts
}

func (b *Bundle) readSpec() {
	p := b.file(ConfigFile)
	var spec Spec
	if err := readJSONObject(p, maxJSONFile, &spec); err != nil {
		b.problem(ConfigFile, err)
		return
	}
	b.Spec = &spec
}

func (b *Bundle) readWork() {
	p := b.file(WorkLink)
	target, err := os.Readlink(p)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("%s: not a symbolic link", p)
		}
		b.problem(WorkLink, err)
		return
	}
	suffix := "/" + TaskStateDirName + "/" + b.Namespace + "/" + b.ID
	clean := filepath.Clean(target)
	if !filepath.IsAbs(target) || !strings.HasSuffix(clean, suffix) {
		b.problem(WorkLink, fmt.Errorf("%s: target %.200q is not an absolute path ending in %s", p, target, suffix))
		return
	}
	b.WorkDir = clean
}

// readAddress reads the shim's socket address from BootstrapFile
// (containerd 2.x) or, when that does not exist, from AddressFile
// (1.6/1.7). Only when neither exists is the address missing.
func (b *Bundle) readAddress() {
	b.TaskAPI = 2
	var boot Bootstrap
	switch err := readJSONObject(b.file(BootstrapFile), maxSmallFile, &boot); {
	case err == nil:
		if addr, err := checkAddress(boot.Address); err != nil {
			b.problem(BootstrapFile, fmt.Errorf("%s: address: %w", b.file(BootstrapFile), err))
		} else {
			b.Address = addr
			if boot.Version >= 3 {
				b.TaskAPI = 3
			}
		}
		return
	case !errors.Is(err, fs.ErrNotExist):
		b.problem(BootstrapFile, err)
		return
	}
	p := b.file(AddressFile)
	data, err := readRegular(p, maxSmallFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("neither %s nor %s: %w", AddressFile, BootstrapFile, err)
		}
		b.problem(AddressFile, err)
		return
	}
	addr, err := checkAddress(strings.TrimSpace(string(data)))
	if err != nil {
		b.problem(AddressFile, fmt.Errorf("%s: %w", p, err))
		return
	}
	b.Address = addr
}

// checkAddress returns addr when it is "unix://PATH".
func checkAddress(addr string) (string, error) {
	if err := checkName(addr); err != nil {
		return "", fmt.Errorf("not an address: %w", err)
	}
	if !strings.HasPrefix(addr, unixScheme) || len(addr) == len(unixScheme) {
		return "", fmt.Errorf("address %.200q is not unix://PATH", addr)
	}
	return addr, nil
}

// readSocketDir reads containerd 2.x's SocketDirLink. It is optional
// (1.6/1.7 do not write it); a link that is not an absolute path is a
// Problem and DefaultSocketDir is used.
func (b *Bundle) readSocketDir() {
	p := b.file(SocketDirLink)
	target, err := os.Readlink(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case errors.Is(err, unix.EINVAL):
		b.problem(SocketDirLink, fmt.Errorf("%s: not a symbolic link", p))
		return
	case err != nil:
		b.problem(SocketDirLink, err)
		return
	}
	if err := checkName(target); err != nil || !filepath.IsAbs(target) {
		b.problem(SocketDirLink, fmt.Errorf("%s: target %.200q is not an absolute path", p, target))
		return
	}
	b.SocketDir = filepath.Clean(target)
}

// readShimBinaryPath reads ShimBinaryPathFile; it is optional.
func (b *Bundle) readShimBinaryPath() {
	path, err := ReadShimBinaryPath(b.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		b.problem(ShimBinaryPathFile, err)
	default:
		b.ShimBinaryPath = path
	}
}

// ReadShimBinaryPath returns the shim binary named by ShimBinaryPathFile
// in the task directory taskDir, read as Load reads every file: opened
// with O_NOFOLLOW (a symlink in its place is an error, never followed), a
// regular file (a FIFO or device is an error, never blocked on) of at most
// 64 KiB. Surrounding white space is trimmed; what is left must be an
// absolute path without control characters, else it is an error naming
// the file. A missing file (or task directory) returns an error wrapping
// fs.ErrNotExist: containerd before 1.6 does not write the file.
func ReadShimBinaryPath(taskDir string) (string, error) {
	p := filepath.Join(taskDir, ShimBinaryPathFile)
	data, err := readRegular(p, maxSmallFile)
	if err != nil {
		return "", err
	}
	path := strings.TrimSpace(string(data))
	if err := checkName(path); err != nil || !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s: %.200q is not an absolute path", p, path)
	}
	return path, nil
}

// readSandbox reads containerd 2.x's SandboxFile; it is optional.
func (b *Bundle) readSandbox() {
	id, err := ReadSandbox(b.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		b.problem(SandboxFile, err)
	default:
		b.Sandbox = id
	}
}

// ReadSandbox returns the sandbox id recorded in the task directory at
// path (SandboxFile), read as Load reads every file: no symlink followed,
// size-bounded, and it must be a valid id. A missing file wraps
// fs.ErrNotExist.
func ReadSandbox(path string) (string, error) {
	p := filepath.Join(path, SandboxFile)
	data, err := readRegular(p, maxSmallFile)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(data))
	if err := ValidateID(id); err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return id, nil
}

// readExit reads containerd 2.4's ExitFile, with upstream's checks
// (ReadExitStatus): a positive pid, a timestamp, a status that is not
// negative (and fits an exit status). It is optional.
func (b *Bundle) readExit() {
	p := b.file(ExitFile)
	var e Exit
	err := readJSONObject(p, maxSmallFile, &e)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		b.problem(ExitFile, err)
		return
	case e.Pid <= 0 || e.Timestamp.IsZero() || e.Status < 0 || e.Status > math.MaxUint32:
		b.problem(ExitFile, fmt.Errorf("%s: not a valid exit: pid %d, status %d, time %s", p, e.Pid, e.Status, e.Timestamp))
		return
	}
	b.Exit = &e
}

// chooseRuntime picks `runtime`, else Options.BinaryName, else
// DefaultRuntime, and resolves it with exec.LookPath.
func (b *Bundle) chooseRuntime(fromFile string) {
	b.Runtime = fromFile
	if b.Runtime == "" && b.Options != nil && b.Options.BinaryName != "" {
		if err := checkName(b.Options.BinaryName); err != nil {
			b.problem(OptionsFile, fmt.Errorf("%s: binary_name: %w", b.file(OptionsFile), err))
		} else {
			b.Runtime = b.Options.BinaryName
		}
	}
	if b.Runtime == "" {
		b.Runtime = DefaultRuntime
	}
	p, err := exec.LookPath(b.Runtime)
	if err != nil {
		b.problem(whatBinary, fmt.Errorf("look up %q: %w", b.Runtime, err))
		return
	}
	b.RuntimePath = p
}

func (b *Bundle) chooseRuncRoot() {
	b.RuncRoot = runcRootDefault
	if b.Options == nil || b.Options.Root == "" {
		return
	}
	root := b.Options.Root
	if err := checkName(root); err != nil || !filepath.IsAbs(root) {
		b.problem(OptionsFile, fmt.Errorf("%s: root %.200q is not an absolute path, using %s", b.file(OptionsFile), root, b.RuncRoot))
		return
	}
	b.RuncRoot = filepath.Clean(root)
}

// readRegular reads the regular file at path without following a final
// symlink and without blocking on a FIFO; more than max bytes is an error.
// A missing file returns an error wrapping fs.ErrNotExist.
func readRegular(path string, max int64) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s: is a symbolic link, not followed", path)
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, st.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return data, nil
}

// readJSONObject decodes the JSON object in the file at path into v; empty
// content, "null", an array or trailing garbage are errors.
func readJSONObject(path string, max int64, v any) error {
	data, err := readRegular(path, max)
	if err != nil {
		return err
	}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%s: not a JSON object: %.40q", path, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: decode: %w", path, err)
	}
	return nil
}

// ReadRuncState reads runc's state for namespace/id under the runc root
// root: <root>/<namespace>/<id>/state.json, decoded into RuncState. It is
// the one reader of runc's state.json in this module (Load uses it).
//
// The file is opened with O_NOFOLLOW (a symlink in its place is an error,
// never followed), must be a regular file (a FIFO or device is an error,
// never blocked on) of at most 16 MiB, and must hold one JSON object that
// names the container id and carries its cgroup configuration; anything
// else is an error naming the file. A missing file (or state directory)
// returns an error wrapping fs.ErrNotExist. namespace and id are not
// validated here: callers pass validated names (ValidateNamespace,
// ValidateID), since they are joined into the path as given.
func ReadRuncState(root, namespace, id string) (*RuncState, error) {
	p := filepath.Join(root, namespace, id, stateFile)
	var st RuncState
	if err := readJSONObject(p, maxJSONFile, &st); err != nil {
		return nil, err
	}
	if st.ID != id {
		return nil, fmt.Errorf("%s: holds container id %.80q, not %q", p, st.ID, id)
	}
	if st.Config.Cgroups == nil {
		return nil, fmt.Errorf("%s: no cgroup configuration", p)
	}
	return &st, nil
}

package bundle

// API contract for package bundle. The implementing helper replaces the
// panics with real code and may split this file; the exported names and
// signatures below are what package shim calls.

import (
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Names of the files in a runc-v2 task directory.
const (
	RuntimeFile = "runtime"
	InitPidFile = "init.pid"
	OptionsFile = "options.json"
	ConfigFile  = "config.json"
	WorkLink    = "work"
	AddressFile = "address"
	RootfsDir   = "rootfs"
)

// DefaultRuncRoot is the runc root of containerd's runc shim when
// options.json sets none; runc's state is at <root>/<namespace>/<id>.
const DefaultRuncRoot = "/run/containerd/runc"

// DefaultRuntime is the runtime binary when neither `runtime` nor
// options.json names one.
const DefaultRuntime = "runc"

// Problem is one part of a task directory that could not be read as expected.
type Problem struct {
	What string // file name, or "state.json", "runtime binary"
	Err  error  // wraps fs.ErrNotExist for a missing file; otherwise says what is wrong
}

func (p Problem) Error() string { return p.What + ": " + p.Err.Error() }
func (p Problem) Unwrap() error { return p.Err }

// Bundle is what Load could learn about one task directory.
type Bundle struct {
	Path      string // absolute, cleaned
	Namespace string
	ID        string

	// Runtime is the runtime binary named by `runtime`, else options.json's
	// BinaryName, else DefaultRuntime. RuntimePath is it resolved with
	// exec.LookPath, "" when it cannot be found (recorded as a Problem).
	Runtime     string
	RuntimePath string

	// InitPid is the pid in init.pid, 0 when missing or garbage. A claim,
	// never proof: pids are reused.
	InitPid int

	Options  *options.Options // nil when options.json is missing or garbage
	RuncRoot string           // Options.Root, else DefaultRuncRoot
	Spec     *specs.Spec      // nil when config.json is missing or garbage

	// State is runc's own state for the container, nil when missing or
	// garbage. StateDir is <RuncRoot>/<Namespace>/<ID>, always set.
	State    *libcontainer.State
	StateDir string

	// WorkDir is the target of the `work` link when it points at
	// <containerd root>/io.containerd.runtime.v2.task/<Namespace>/<ID>;
	// "" otherwise (recorded as a Problem unless simply missing with the
	// bundle itself missing).
	WorkDir string

	// Address is the shim's socket address from `address` (e.g.
	// "unix:///run/containerd/s/<hash>"), "" when missing.
	Address string

	// Missing is true when the task directory itself does not exist.
	Missing bool

	Problems []Problem
}

// ValidateID returns an error (wrapping errdefs.ErrInvalidArgument) unless id
// is a valid containerd identifier.
func ValidateID(id string) error { panic("todo") }

// ValidateNamespace returns an error unless ns is a valid containerd namespace.
func ValidateNamespace(ns string) error { panic("todo") }

// Load reads the task directory at path for namespace/id best-effort.
// It returns an error only when id or namespace is invalid or the base name
// of path is not id; everything else is recorded in Bundle.Problems.
func Load(path, namespace, id string) (*Bundle, error) { panic("todo") }

// UnmountAll unmounts every mount at or below path (as seen in
// /proc/self/mountinfo), deepest first; "not mounted" counts as success; a
// mount that will not unmount normally is detached (MNT_DETACH). It then
// checks mountinfo again and returns an error naming every mount point still
// present. It returns the mount points it unmounted.
func UnmountAll(path string) (unmounted []string, err error) { panic("todo") }

// RemoveAll removes path and everything below it, like os.RemoveAll, but
// never crosses a mount point: a directory or file that is a mount point (by
// mountinfo, by st_dev, or by openat2 RESOLVE_NO_XDEV) is left in place with
// everything above it, and the returned error names each such path.
// A missing path is success.
func RemoveAll(path string) error { panic("todo") }

// RemoveDeadSocket removes the unix socket of address ("unix://PATH") when
// nothing accepts connections on it. It reports whether it removed it. A
// missing socket is success; a live one is left and reported with an error.
func RemoveDeadSocket(address string) (removed bool, err error) { panic("todo") }

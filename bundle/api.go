package bundle

import (
	"encoding/json"
	"strings"
	"time"
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
	// BootstrapFile is where containerd 2.x records the shim's socket
	// (instead of AddressFile).
	BootstrapFile = "bootstrap.json"
	// SocketDirLink is containerd 2.x's link to the shim socket directory.
	SocketDirLink = "s"
	// ShimBinaryPathFile names the shim binary containerd started.
	ShimBinaryPathFile = "shim-binary-path"
	// ExitFile is where containerd 2.4's shim records the init's exit.
	ExitFile = "exit.json"
	// SandboxFile names, in containerd 2.x, the sandbox whose shim serves
	// the task (a container joined to its pod's shim).
	SandboxFile = "sandbox"
)

// DefaultSocketDir is where containerd puts shim sockets unless its 2.x
// configuration (recorded in the SocketDirLink) says otherwise.
const DefaultSocketDir = "/run/containerd/s"

// DefaultRuncRoot is the runc root of containerd's runc shim when
// options.json sets none; runc's state is at <root>/<namespace>/<id>.
const DefaultRuncRoot = "/run/containerd/runc"

// Options is what the delete path reads of options.json: containerd's
// runc options (github.com/containerd/containerd/api/types/runc/options
// Options, written with encoding/json by every containerd's runc shim),
// under their JSON names. Decoding into the generated protobuf type would
// link the protobuf registry into every delete; the tests hold this type to
// the generated one.
type Options struct {
	BinaryName    string `json:"binary_name,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	ShimCgroup    string `json:"shim_cgroup,omitempty"`
}

// Exit is the init's exit as containerd 2.4's shim records it in ExitFile
// (go-runc's Exit, encoded with its Go field names).
type Exit struct {
	Timestamp time.Time
	Pid       int
	Status    int
}

// Bootstrap is containerd 2.x's BootstrapFile.
type Bootstrap struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

// DefaultRuntime is the runtime binary when neither `runtime` nor
// options.json names one.
const DefaultRuntime = "runc"

// Problem is one part of a task directory that could not be read as expected.
//
// What is the file name (RuntimeFile, InitPidFile, OptionsFile, ConfigFile,
// WorkLink, AddressFile), "task directory" when the bundle path exists but
// is not a directory, "state.json" for runc's state, or "runtime binary"
// when the chosen runtime cannot be found with exec.LookPath.
// errors.Is(p, fs.ErrNotExist) tells a missing file from a corrupt one.
type Problem struct {
	What string // file name, or "state.json", "runtime binary"
	Err  error  // wraps fs.ErrNotExist for a missing file; otherwise says what is wrong
}

// Error returns "What: Err".
func (p Problem) Error() string { return p.What + ": " + p.Err.Error() }

// Unwrap returns Err, so errors.Is(p, fs.ErrNotExist) works.
func (p Problem) Unwrap() error { return p.Err }

// Spec is the part of the bundle's config.json (an OCI runtime spec,
// specs-go's Spec) that the delete path uses, under the spec's JSON names.
// Decoding the whole spec would cost a fresh delete process half a
// millisecond of reflection for fields it never reads.
type Spec struct {
	Version     string            `json:"ociVersion"`
	Root        *SpecRoot         `json:"root,omitempty"`
	Linux       *SpecLinux        `json:"linux,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SpecRoot is the spec's root filesystem.
type SpecRoot struct {
	Path string `json:"path"`
}

// SpecLinux is the part of the spec's linux section the delete path uses.
type SpecLinux struct {
	CgroupsPath string `json:"cgroupsPath,omitempty"`
}

// RuncState is what the delete path reads of runc's own state.json: the
// fields of runc's libcontainer.State (runc 1.0 through 1.3) that it uses,
// under runc's own JSON names. The binary does not link libcontainer, which
// would add about 1 MiB to every running shim and 3 ms to every delete; the
// tests decode state.json written through libcontainer.State v1.3.x, and by
// a real runc, into this type.
type RuncState struct {
	ID                   string            `json:"id"`
	InitProcessPid       int               `json:"init_process_pid"`
	InitProcessStartTime uint64            `json:"init_process_start"` // clock ticks since boot
	Created              time.Time         `json:"created"`
	CgroupPaths          map[string]string `json:"cgroup_paths"`
	// IntelRdtPath is the container's Intel RDT (resctrl) group, "" when
	// it has none.
	IntelRdtPath string     `json:"intel_rdt_path,omitempty"`
	Config       RuncConfig `json:"config"`
}

// RuncConfig is the part of runc's configs.Config that the delete path uses.
type RuncConfig struct {
	Cgroups *RuncCgroups `json:"cgroups"`
	// Hooks maps a hook name ("poststop", ...) to its hooks, as runc's
	// configs.Hooks marshals them.
	Hooks map[string][]json.RawMessage `json:"Hooks"`
	// Labels are runc's config labels: the spec's annotations as
	// "key=value", and "bundle=<bundle path>".
	Labels []string `json:"labels"`
	// IntelRdt is runc's Intel RDT configuration, kept raw: only whether
	// it is there matters (runc owns the group).
	IntelRdt json.RawMessage `json:"intel_rdt,omitempty"`
}

// Label returns the value of runc config label key and whether it is there.
func (c RuncConfig) Label(key string) (string, bool) {
	for _, l := range c.Labels {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// HasIntelRdt reports whether runc placed the container in an Intel RDT
// group, which only runc's own delete removes.
func (s *RuncState) HasIntelRdt() bool {
	return s.IntelRdtPath != "" || (len(s.Config.IntelRdt) > 0 && string(s.Config.IntelRdt) != "null")
}

// HasPoststopHooks reports whether runc will run poststop hooks when it
// deletes the container (they are handed the bundle path).
func (c RuncConfig) HasPoststopHooks() bool { return len(c.Hooks["poststop"]) > 0 }

// RuncCgroups is the part of runc's cgroups.Cgroup that the delete path uses.
type RuncCgroups struct {
	Name        string `json:"name,omitempty"`
	Parent      string `json:"parent,omitempty"`
	Path        string `json:"path,omitempty"`
	ScopePrefix string `json:"scope_prefix,omitempty"`
	Systemd     bool   `json:"Systemd,omitempty"`
}

// Bundle is what Load could learn about one task directory. Every field that
// comes from a file is its zero value when that file is missing or corrupt;
// the reason is then in Problems.
type Bundle struct {
	Path      string // absolute, cleaned
	Namespace string
	ID        string

	// Runtime is the runtime binary named by `runtime`, else options.json's
	// BinaryName, else DefaultRuntime. RuntimePath is it resolved with
	// exec.LookPath, "" when it cannot be found (recorded as a Problem).
	// An empty `runtime` file is what containerd writes when BinaryName is
	// unset: it names nothing and is not a Problem.
	Runtime     string
	RuntimePath string

	// InitPid is the pid in init.pid, 0 when missing or garbage. A claim,
	// never proof: pids are reused.
	InitPid int

	Options  *Options // nil when options.json is missing or garbage
	RuncRoot string   // Options.Root (when absolute), else DefaultRuncRoot
	Spec     *Spec    // nil when config.json is missing or garbage

	// State is runc's own state for the container, nil when missing or
	// garbage (a state.json whose id is not ID counts as garbage).
	// StateDir is <RuncRoot>/<Namespace>/<ID>, always set, also when the
	// task directory is Missing.
	State    *RuncState
	StateDir string

	// WorkDir is the target of the `work` link when it points at
	// <containerd root>/io.containerd.runtime.v2.task/<Namespace>/<ID>;
	// "" otherwise (recorded as a Problem unless simply missing with the
	// bundle itself missing).
	WorkDir string

	// Address is the shim's socket address, from BootstrapFile when it
	// exists (containerd 2.x), else from AddressFile (1.6/1.7): e.g.
	// "unix:///run/containerd/s/<hash>"; "" when missing or not of the
	// form "unix://PATH". Only one of the two files is expected: the one
	// the daemon's version does not write is never a Problem.
	Address string
	// TaskAPI is the version of the task API the shim at Address serves:
	// 3 when Address came from a BootstrapFile of version 3 or more
	// (containerd 2.x), else 2 (1.6/1.7's AddressFile, or no address).
	TaskAPI int
	// SocketDir is the directory shim sockets live in: the target of the
	// SocketDirLink (containerd 2.x) when it is an absolute path, else
	// DefaultSocketDir. A socket is removed only from this directory.
	SocketDir string

	// ShimBinaryPath is the shim binary containerd started for the task,
	// from ShimBinaryPathFile; "" when missing (1.6 may not write it).
	ShimBinaryPath string

	// Sandbox is the sandbox id in SandboxFile (containerd 2.x: the task
	// is a container served by its sandbox's shim), "" when there is none
	// or it is not a valid id (a Problem then).
	Sandbox string

	// Exit is the init's exit recorded by containerd 2.4's shim (ExitFile),
	// nil when there is none (a Problem only when present but garbage).
	Exit *Exit

	// Missing is true when the task directory itself does not exist. The
	// files inside it are then not reported one by one as Problems; runc's
	// state (under the default RuncRoot) and the runtime binary still are.
	Missing bool

	Problems []Problem
}

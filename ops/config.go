package ops

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// DefaultContainerdConfig is containerd's configuration file when it runs
// without --config.
const DefaultContainerdConfig = "/etc/containerd/config.toml"

// Containerd's defaults for its top-level `root` and `state` keys (1.6,
// 1.7 and 2.x).
const (
	DefaultContainerdRoot  = "/var/lib/containerd"
	DefaultContainerdState = "/run/containerd"
)

// TaskStateDirName is bundle.TaskStateDirName, the runtime v2 task
// plugin's directory under containerd's `state` (task directories:
// <state>/<TaskStateDirName>/<ns>/<id>) and under its `root` (work
// directories, same layout), for ops' callers that do not import bundle.
const TaskStateDirName = bundle.TaskStateDirName

// ContainerdConfig is what gc reads from containerd's configuration: the
// top-level keys `version`, `root`, `state` and `imports`, from the file
// and the files it imports, merged as containerd merges them.
type ContainerdConfig struct {
	// Path is the file read first; Files every file read, in order
	// (Path, then its imports, breadth first, as containerd loads them).
	Path  string
	Files []string
	// Version is the main file's `version` (0 when absent: containerd
	// then reads it as version 1).
	Version int
	// Root and State are the merged values; "" when no file sets them
	// (see TaskStateDir).
	Root, State string
}

// TaskStateDir is <state>/io.containerd.runtime.v2.task, with containerd's
// default state when the configuration sets none.
func (c *ContainerdConfig) TaskStateDir() string {
	return filepath.Join(c.stateOrDefault(), TaskStateDirName)
}

func (c *ContainerdConfig) stateOrDefault() string {
	if c == nil || c.State == "" {
		return DefaultContainerdState
	}
	return c.State
}

func (c *ContainerdConfig) rootOrDefault() string {
	if c == nil || c.Root == "" {
		return DefaultContainerdRoot
	}
	return c.Root
}

// LoadContainerdConfig reads containerd's configuration at path the way
// containerd does for the keys gc needs: `root` and `state` of the file,
// then of each file in its `imports` (relative to the importing file's
// directory, `*` globbed, each file once), a later non-empty value
// overriding an earlier one. Versions 1 to 4 name these keys alike (1.6
// and 1.7 write version 2, 2.x versions 3 and 4).
//
// Each file is parsed whole with github.com/pelletier/go-toml/v2, the
// parser containerd itself uses: a file that is not TOML, or whose
// `version`, `root`, `state` or `imports` has the wrong type, is an error
// naming the file (containerd would not start with it either). A missing
// file is an error wrapping fs.ErrNotExist, as is a missing import; an
// import glob that matches nothing is not. Every file must be a regular
// file of at most 4 MiB (readConfigFile).
func LoadContainerdConfig(path string) (*ContainerdConfig, error) {
	c := &ContainerdConfig{Path: path}
	loaded := map[string]bool{}
	pending := []string{path}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		loaded[p] = true
		keys, err := readTopLevelKeys(p)
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, p)
		if p == path && keys.Version != nil {
			if *keys.Version < 0 {
				return nil, fmt.Errorf("containerd config %s: version %d: not a version", p, *keys.Version)
			}
			c.Version = int(*keys.Version)
		}
		if keys.Root != "" {
			c.Root = keys.Root
		}
		if keys.State != "" {
			c.State = keys.State
		}
		imports, err := ResolveImports(p, keys.Imports)
		if err != nil {
			return nil, err
		}
		pending = append(pending, imports...)
	}
	for _, d := range []struct{ key, v string }{{"root", c.Root}, {"state", c.State}} {
		if d.v != "" && !filepath.IsAbs(d.v) {
			return nil, fmt.Errorf("containerd config %s: %s %q is not an absolute path", path, d.key, d.v)
		}
	}
	c.Root, c.State = cleanOrEmpty(c.Root), cleanOrEmpty(c.State)
	return c, nil
}

// ResolveImports returns the files an `imports` list of the file at path
// names, as containerd resolves them: relative to path's directory, a
// pattern with `*` globbed (sorted; no match is no file), others as they
// are (a missing one is the caller's ENOENT).
func ResolveImports(path string, imports []string) ([]string, error) {
	var out []string
	for _, imp := range imports {
		imp = filepath.Clean(imp)
		if !filepath.IsAbs(imp) {
			imp = filepath.Join(filepath.Dir(path), imp)
		}
		if !strings.Contains(imp, "*") {
			out = append(out, imp)
			continue
		}
		matches, err := filepath.Glob(imp)
		if err != nil {
			return nil, fmt.Errorf("containerd config %s: import %q: %w", path, imp, err)
		}
		out = append(out, matches...)
	}
	return out, nil
}

func cleanOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// topLevelKeys are the top-level values LoadContainerdConfig uses; every
// other key of the file is parsed and ignored.
type topLevelKeys struct {
	Version *int64   `toml:"version"`
	Root    string   `toml:"root"`
	State   string   `toml:"state"`
	Imports []string `toml:"imports"`
}

// MaxConfigSize bounds what is read of a configuration file.
const MaxConfigSize = 4 << 20

const maxConfigSize = MaxConfigSize

// readTopLevelKeys parses the TOML file at path and returns the keys gc
// needs.
func readTopLevelKeys(path string) (*topLevelKeys, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	k := &topLevelKeys{}
	if err := toml.Unmarshal(data, k); err != nil {
		return nil, fmt.Errorf("containerd config %s: %w", path, tomlError(err))
	}
	return k, nil
}

// tomlError adds the line and column to a go-toml decoding error.
func tomlError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %w", row, col, err)
	}
	return err
}

// ReadConfigFile reads a containerd configuration file as
// LoadContainerdConfig does (a regular file, links followed, at most
// MaxConfigSize bytes, never blocking on a FIFO or a device).
func ReadConfigFile(path string) ([]byte, error) { return readConfigFile(path) }

// readConfigFile reads a configuration file, which must be a regular file
// (links are followed, as containerd follows them) of at most
// maxConfigSize bytes. It is opened O_NONBLOCK and checked before any read:
// a FIFO or a device named by --config or an import never makes gc wait, and
// /dev/zero is not read. A missing file wraps fs.ErrNotExist.
func readConfigFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	switch {
	case err != nil:
		return nil, fmt.Errorf("containerd config: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("containerd config %s: not a regular file (%s)", path, fi.Mode().Type())
	case fi.Size() > maxConfigSize:
		return nil, fmt.Errorf("containerd config %s: larger than %d bytes", path, maxConfigSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("containerd config %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("containerd config %s: larger than %d bytes", path, maxConfigSize)
	}
	return data, nil
}

// StateDirChoice is the task state directory gc sweeps and how it was
// chosen (see ChooseStateDir).
type StateDirChoice struct {
	// Dir is the task state directory: task directories are
	// <Dir>/<namespace>/<id>.
	Dir string
	// From says where it came from: "--state-dir", "$NAME", "state in
	// FILE", or "containerd's default".
	From string
	// Note, when not "", says how a given directory was understood (a
	// containerd state root given for its task state directory).
	Note string
}

// ErrContainerdRoot is ChooseStateDir's error for a directory that is
// containerd's `root` (or its runtime v2 directory): it holds the tasks'
// work directories, which are not task directories.
var ErrContainerdRoot = errors.New("containerd's root directory, not its state")

// ChooseStateDir picks gc's task state directory: flagDir (from
// --state-dir), else envDir (from the environment variable envName), else
// <state>/io.containerd.runtime.v2.task with cfg's `state`, else
// DefaultStateDir. cfg may be nil (no configuration file); it also names
// containerd's root and state for the checks below.
//
// A given directory (flag or environment) that is containerd's `state`
// root — it holds io.containerd.runtime.v2.task, or it is cfg's state — is
// understood as <dir>/io.containerd.runtime.v2.task, and Note says so. A
// given directory that is containerd's `root`, or
// <root>/io.containerd.runtime.v2.task, is refused with
// ErrContainerdRoot: its entries are work directories.
func ChooseStateDir(flagDir, envDir, envName string, cfg *ContainerdConfig) (StateDirChoice, error) {
	var c StateDirChoice
	switch {
	case flagDir != "":
		c.Dir, c.From = flagDir, "--state-dir"
	case envDir != "":
		c.Dir, c.From = envDir, "$"+envName
	case cfg != nil && cfg.State != "":
		return StateDirChoice{Dir: cfg.TaskStateDir(), From: "state in " + cfg.Path}, nil
	case cfg != nil:
		return StateDirChoice{Dir: cfg.TaskStateDir(), From: "containerd's default (" + cfg.Path + " sets no state)"}, nil
	default:
		return StateDirChoice{Dir: DefaultStateDir, From: "containerd's default"}, nil
	}
	abs, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, fmt.Errorf("%s %s: %w", c.From, c.Dir, err)
	}
	root := cfg.rootOrDefault()
	if abs == root || abs == filepath.Join(root, TaskStateDirName) {
		return c, fmt.Errorf("%s %s: %w (its %s holds work directories): give containerd's state directory, %s", c.From, c.Dir, ErrContainerdRoot, TaskStateDirName, cfg.stateOrDefault())
	}
	if filepath.Base(abs) == TaskStateDirName {
		return c, nil
	}
	sub := filepath.Join(abs, TaskStateDirName)
	fi, err := os.Stat(sub)
	switch {
	case err == nil && fi.IsDir(), abs == cfg.stateOrDefault() && errors.Is(err, fs.ErrNotExist):
		c.Note = fmt.Sprintf("%s is containerd's state directory: swept its task state directory %s", c.Dir, sub)
		c.Dir = sub
	}
	return c, nil
}

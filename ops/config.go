package ops

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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

// TaskStateDirName is the runtime v2 task plugin's directory under
// containerd's `state` (task directories: <state>/<TaskStateDirName>/<ns>/<id>)
// and under its `root` (work directories, same layout).
const TaskStateDirName = "io.containerd.runtime.v2.task"

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
// It is not a TOML parser: it reads the top-level key/value lines before
// the first [table] header, and understands of their values basic and
// literal strings, integers and arrays of strings (possibly over several
// lines); a line it cannot read is an error only when its key is one of
// the four above. A missing file is an error wrapping fs.ErrNotExist, as
// is a missing import (containerd would not start either); an import glob
// that matches nothing is not.
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
		if p == path && keys.version != "" {
			v, err := strconv.Atoi(keys.version)
			if err != nil || v < 0 {
				return nil, fmt.Errorf("containerd config %s: version %q: not a version", p, keys.version)
			}
			c.Version = v
		}
		if keys.root != "" {
			c.Root = keys.root
		}
		if keys.state != "" {
			c.State = keys.state
		}
		for _, imp := range keys.imports {
			imp = filepath.Clean(imp)
			if !filepath.IsAbs(imp) {
				imp = filepath.Join(filepath.Dir(p), imp)
			}
			if !strings.Contains(imp, "*") {
				pending = append(pending, imp)
				continue
			}
			matches, err := filepath.Glob(imp)
			if err != nil {
				return nil, fmt.Errorf("containerd config %s: import %q: %w", p, imp, err)
			}
			pending = append(pending, matches...)
		}
	}
	for _, d := range []struct{ key, v string }{{"root", c.Root}, {"state", c.State}} {
		if d.v != "" && !filepath.IsAbs(d.v) {
			return nil, fmt.Errorf("containerd config %s: %s %q is not an absolute path", path, d.key, d.v)
		}
	}
	c.Root, c.State = cleanOrEmpty(c.Root), cleanOrEmpty(c.State)
	return c, nil
}

func cleanOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// topLevelKeys are the top-level values LoadContainerdConfig uses.
type topLevelKeys struct {
	version, root, state string
	imports              []string
}

// maxConfigSize bounds what is read of a configuration file.
const maxConfigSize = 4 << 20

// readTopLevelKeys reads the keys gc needs from the lines of a TOML file
// before its first table header.
func readTopLevelKeys(path string) (*topLevelKeys, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	k := &topLevelKeys{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), maxConfigSize)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			break // the first table: no top-level key after it
		}
		key, rest, ok := cutKey(line)
		if !ok {
			continue // a dotted key or something else gc does not need
		}
		// A value may continue on the next lines: an array, or a
		// multi-line string.
		for !valueComplete(rest) && sc.Scan() {
			n++
			rest += "\n" + sc.Text()
		}
		wrap := func(err error) error {
			return fmt.Errorf("containerd config %s:%d: %s: %w", path, n, key, err)
		}
		switch key {
		case "version":
			v, err := parseInteger(rest)
			if err != nil {
				return nil, wrap(err)
			}
			k.version = v
		case "root", "state":
			v, err := parseString(rest)
			if err != nil {
				return nil, wrap(err)
			}
			if key == "root" {
				k.root = v
			} else {
				k.state = v
			}
		case "imports":
			v, err := parseStringArray(rest)
			if err != nil {
				return nil, wrap(err)
			}
			k.imports = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("containerd config %s: %w", path, err)
	}
	return k, nil
}

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

// errValue is a value gc's reader does not understand.
var errValue = errors.New("value not understood")

// cutKey splits `key = value` with a bare or quoted key (no dots).
func cutKey(line string) (key, rest string, ok bool) {
	switch line[0] {
	case '"', '\'':
		end := strings.IndexByte(line[1:], line[0])
		if end < 0 {
			return "", "", false
		}
		key, rest = line[1:1+end], line[2+end:]
		if strings.ContainsAny(key, "\\") {
			return "", "", false
		}
	default:
		i := 0
		for i < len(line) && isBareKeyChar(line[i]) {
			i++
		}
		key, rest = line[:i], line[i:]
	}
	rest = strings.TrimLeft(rest, " \t")
	if key == "" || !strings.HasPrefix(rest, "=") {
		return "", "", false
	}
	return key, strings.TrimLeft(rest[1:], " \t"), true
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// valueComplete reports whether v (a value and what follows it on its
// line) is a whole value: brackets outside strings balance, and a
// multi-line string is closed.
func valueComplete(v string) bool {
	if q := multiLineQuote(v); q != "" {
		return strings.Contains(v[3:], q)
	}
	depth := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '#':
			for i < len(v) && v[i] != '\n' {
				i++
			}
		case '"', '\'':
			j := i + 1
			for j < len(v) && v[j] != c && v[j] != '\n' {
				if c == '"' && v[j] == '\\' {
					j++
				}
				j++
			}
			i = j
		case '[':
			depth++
		case ']':
			depth--
		}
	}
	return depth <= 0
}

func multiLineQuote(v string) string {
	for _, q := range []string{`"""`, `'''`} {
		if strings.HasPrefix(v, q) {
			return q
		}
	}
	return ""
}

// afterValue checks that only a comment follows a value.
func afterValue(rest string) error {
	rest = strings.TrimLeft(rest, " \t")
	if rest != "" && rest[0] != '#' {
		return fmt.Errorf("%w: %q after the value", errValue, rest)
	}
	return nil
}

// parseString reads a basic ("...", with escapes) or literal ('...')
// one-line string and checks that only a comment follows it.
func parseString(v string) (string, error) {
	s, rest, err := cutString(v)
	if err != nil {
		return "", err
	}
	return s, afterValue(rest)
}

// cutString reads the string at the start of v and returns the rest.
func cutString(v string) (s, rest string, err error) {
	if multiLineQuote(v) != "" {
		return "", "", fmt.Errorf("%w: multi-line strings are not supported here", errValue)
	}
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return "", "", fmt.Errorf("%w: %.40q is not a string", errValue, v)
	}
	if v[0] == '\'' {
		end := strings.IndexByte(v[1:], '\'')
		if end < 0 || strings.Contains(v[1:1+end], "\n") {
			return "", "", fmt.Errorf("%w: unterminated string", errValue)
		}
		return v[1 : 1+end], v[2+end:], nil
	}
	for i := 1; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '\n':
			return "", "", fmt.Errorf("%w: unterminated string", errValue)
		case '"':
			s, err := strconv.Unquote(v[:i+1])
			if err != nil {
				return "", "", fmt.Errorf("%w: %v", errValue, err)
			}
			return s, v[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("%w: unterminated string", errValue)
}

// parseInteger reads a decimal integer (TOML allows _ between digits).
func parseInteger(v string) (string, error) {
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '_' || (i == 0 && v[i] == '+')) {
		i++
	}
	n := strings.TrimPrefix(strings.ReplaceAll(v[:i], "_", ""), "+")
	if n == "" {
		return "", fmt.Errorf("%w: %.40q is not an integer", errValue, v)
	}
	return n, afterValue(v[i:])
}

// parseStringArray reads an array of strings, over one line or several,
// with comments and a trailing comma.
func parseStringArray(v string) ([]string, error) {
	if v == "" || v[0] != '[' {
		return nil, fmt.Errorf("%w: %.40q is not an array", errValue, v)
	}
	out := []string{}
	rest := v[1:]
	expectValue := true
	for {
		rest = skipSpaceAndComments(rest)
		switch {
		case rest == "":
			return nil, fmt.Errorf("%w: unterminated array", errValue)
		case rest[0] == ']':
			return out, afterValue(rest[1:])
		case rest[0] == ',' && !expectValue:
			rest, expectValue = rest[1:], true
		case expectValue:
			s, r, err := cutString(rest)
			if err != nil {
				return nil, err
			}
			out, rest, expectValue = append(out, s), r, false
		default:
			return nil, fmt.Errorf("%w: %.40q in an array", errValue, rest)
		}
	}
}

func skipSpaceAndComments(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		if !strings.HasPrefix(s, "#") {
			return s
		}
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		} else {
			s = ""
		}
	}
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

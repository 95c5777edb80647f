package install

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// CRI runtime plugins: where runtime handlers live in each configuration
// version.
const (
	PluginCRIv2 = "io.containerd.grpc.v1.cri"    // version 2 (containerd 1.6, 1.7)
	PluginCRIv3 = "io.containerd.cri.v1.runtime" // versions 3 and 4 (containerd 2.x)
)

// Runtime types.
const (
	RuntimeTypeRunc   = "io.containerd.runc.v2"
	RuntimeTypeRobust = "io.containerd.runc.v2-robust"
)

// DropInName is the base name of our drop-in file.
const DropInName = "zz-containerd-shim-runc-v2-robust.toml"

// ErrConfig is the error of a configuration install refuses (nothing was
// changed).
var ErrConfig = errors.New("containerd configuration refused")

// CRIPlugin returns the CRI runtime plugin of configuration version v: 2
// → io.containerd.grpc.v1.cri, 3 and 4 → io.containerd.cri.v1.runtime; any
// other version is ErrConfig (version 1, or none, which containerd reads
// as 1: migrate it first with `containerd config migrate`).
func CRIPlugin(v int) (string, error) {
	switch v {
	case 2:
		return PluginCRIv2, nil
	case 3, 4:
		return PluginCRIv3, nil
	}
	return "", fmt.Errorf("%w: version %d: install writes versions 2 to 4 (run `containerd config migrate` first)", ErrConfig, v)
}

// Setup is how the runtime names our binary.
type Setup int

const (
	// SetupRuntimePath: runtime_type io.containerd.runc.v2 and
	// runtime_path our binary (runc options decoded). containerd >= 1.6.21,
	// >= 1.7.1, 2.x.
	SetupRuntimePath Setup = iota
	// SetupRuntimeType: runtime_type io.containerd.runc.v2-robust (our
	// binary on containerd's PATH), no options table: containerd
	// 1.6.0-1.6.20 ignore runtime_path.
	SetupRuntimeType
)

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)\.(\d+)`)

// SetupFor returns the set-up for containerd's version string (as
// `containerd --version` prints it): runtime path from 1.6.21, 1.7.1 and
// 2.0, runtime type before. An unparsable version is an error.
func SetupFor(version string) (Setup, error) {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return 0, fmt.Errorf("containerd version %q: no major.minor.patch", version)
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	switch {
	case v[0] > 1, v[0] == 1 && v[1] > 7,
		v[0] == 1 && v[1] == 7 && v[2] >= 1,
		v[0] == 1 && v[1] == 6 && v[2] >= 21:
		return SetupRuntimePath, nil
	}
	return SetupRuntimeType, nil
}

// parseFile parses TOML data of path into a generic tree.
func parseFile(path string, data []byte) (map[string]any, error) {
	m := map[string]any{}
	if err := toml.Unmarshal(data, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%w: %s: line %d column %d: %v", ErrConfig, path, row, col, err)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return m, nil
}

// fileVersion is the `version` of a parsed file (0 when absent).
func fileVersion(path string, m map[string]any) (int, error) {
	v, ok := m["version"]
	if !ok {
		return 0, nil
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("%w: %s: version %v is not an integer", ErrConfig, path, v)
	}
	return int(n), nil
}

func stringList(path, key string, m map[string]any) ([]string, error) {
	v, ok := m[key]
	if !ok {
		return nil, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s: %s is not an array", ErrConfig, path, key)
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s: %s holds %v, not a string", ErrConfig, path, key, e)
		}
		out = append(out, s)
	}
	return out, nil
}

// table walks m along keys, returning the table there (nil when absent or
// not a table).
func table(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

// deepCopy copies a tree of maps and slices decoded from TOML.
func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// quote renders s as containerd writes strings in configuration version
// v: basic strings in 2, literal strings from 3 when s allows it.
func quote(v int, s string) string {
	if v >= 3 && !strings.ContainsAny(s, "'\n\r\t") {
		return "'" + s + "'"
	}
	return strconv.Quote(s)
}

var (
	importsLineRE = regexp.MustCompile(`^\s*("imports"|'imports'|imports)\s*=`)
	versionLineRE = regexp.MustCompile(`^\s*("version"|'version'|version)\s*=`)
)

// addImport returns data with path appended to its top-level `imports`
// (created after `version` when absent), every other byte unchanged. The
// result is checked by parsing: the same tree but for imports, which gain
// path. A file that already imports path is returned as it is.
func addImport(file string, data []byte, version int, path string) ([]byte, error) {
	before, err := parseFile(file, data)
	if err != nil {
		return nil, err
	}
	old, err := stringList(file, "imports", before)
	if err != nil {
		return nil, err
	}
	for _, o := range old {
		if o == path {
			return data, nil
		}
	}
	lines := strings.SplitAfter(string(data), "\n")
	var out []string
	done := false
	for i := 0; i < len(lines) && !done; i++ {
		l := lines[i]
		trim := strings.TrimSpace(l)
		if strings.HasPrefix(trim, "[") {
			break // the first table: no top-level key after it
		}
		if !importsLineRE.MatchString(l) {
			continue
		}
		// The value may span lines: take lines until they parse.
		for j := i; j < len(lines); j++ {
			chunk := strings.Join(lines[i:j+1], "")
			var probe struct {
				Imports []string `toml:"imports"`
			}
			if toml.Unmarshal([]byte(chunk), &probe) != nil {
				continue
			}
			items := make([]string, 0, len(old)+1)
			for _, o := range append(old, path) {
				items = append(items, quote(version, o))
			}
			nl := ""
			if strings.HasSuffix(chunk, "\n") {
				nl = "\n"
			}
			out = append(append(append([]string{}, lines[:i]...), "imports = ["+strings.Join(items, ", ")+"]"+nl), lines[j+1:]...)
			done = true
			break
		}
		if !done {
			return nil, fmt.Errorf("%w: %s: its imports line could not be read", ErrConfig, file)
		}
	}
	if !done {
		ins := "imports = [" + quote(version, path) + "]\n"
		at := 0
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "[") {
				break
			}
			if versionLineRE.MatchString(l) {
				at = i + 1
				break
			}
		}
		if at > 0 && !strings.HasSuffix(lines[at-1], "\n") {
			lines[at-1] += "\n"
		}
		out = append(append(append([]string{}, lines[:at]...), ins), lines[at:]...)
	}
	result := []byte(strings.Join(out, ""))
	after, err := parseFile(file, result)
	if err != nil {
		return nil, fmt.Errorf("adding %s to the imports of %s: %w", path, file, err)
	}
	got, _ := stringList(file, "imports", after)
	delete(before, "imports")
	delete(after, "imports")
	if !reflect.DeepEqual(before, after) || !reflect.DeepEqual(got, append(old, path)) {
		return nil, fmt.Errorf("%w: %s: adding %s to its imports would change more than imports", ErrConfig, file, path)
	}
	return result, nil
}

// renderDropIn renders our drop-in: the version and the one CRI plugin
// table, with a header comment.
func renderDropIn(version int, plugin string, tbl map[string]any, header string) ([]byte, error) {
	var buf bytes.Buffer
	for _, l := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		buf.WriteString("# " + l + "\n")
	}
	body, err := toml.Marshal(map[string]any{
		"version": version,
		"plugins": map[string]any{plugin: tbl},
	})
	if err != nil {
		return nil, fmt.Errorf("rendering the drop-in: %w", err)
	}
	buf.Write(body)
	return buf.Bytes(), nil
}

// globDir returns, of a main file's imports, the first glob whose pattern
// our drop-in's name matches (a conf.d directory), as the host names it.
func globDir(main string, imports []string) string {
	for _, imp := range imports {
		if !strings.Contains(imp, "*") {
			continue
		}
		imp = filepath.Clean(imp)
		if !filepath.IsAbs(imp) {
			imp = filepath.Join(filepath.Dir(main), imp)
		}
		dir, pat := filepath.Split(imp)
		if strings.Contains(dir, "*") {
			continue
		}
		if ok, _ := filepath.Match(pat, DropInName); ok {
			return filepath.Clean(dir)
		}
	}
	return ""
}

var _ = ops.ResolveImports

package ops

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Containerd binaries the configuration reader is checked against: their
// `config default` output is parsed, and `config dump` (containerd's own
// loader, imports merged) is the oracle for every hand-written file.
// `make deps` installs the first and builds the second.
var oracleBinaries = []struct {
	name, path string
	maxVersion int // the highest config version it reads
}{
	{"containerd 1.6 (Debian)", "/usr/bin/containerd", 2},
	{"containerd 2.4", "../bin/containerd-2.4/containerd", 4},
}

func needBinary(t *testing.T, path string) string {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("FATAL: %s is needed to check the containerd configuration reader against containerd: run `make deps` (%v)", abs, err)
	}
	return abs
}

// dumpKeys runs `containerd --config file config dump` in the file's
// directory and returns its merged root and state; ok is false when
// containerd refused the file.
func dumpKeys(t *testing.T, bin, file string) (root, state string, ok bool) {
	t.Helper()
	cmd := exec.Command(bin, "--config", file, "config", "dump")
	cmd.Dir = filepath.Dir(file)
	out, err := cmd.Output()
	if err != nil {
		return "", "", false
	}
	re := regexp.MustCompile(`(?m)^(root|state) = (".*"|'.*')$`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		v := m[2][1 : len(m[2])-1]
		if m[2][0] == '"' {
			if v, err = strconv.Unquote(m[2]); err != nil {
				t.Fatalf("%s config dump: %s: %v", bin, m[0], err)
			}
		}
		if m[1] == "root" {
			root = v
		} else {
			state = v
		}
	}
	return root, state, true
}

func TestLoadContainerdConfigDefaults(t *testing.T) {
	for _, c := range []struct {
		file    string
		version int
	}{
		{"testdata/containerd-1.6-default.toml", 2},
		{"testdata/containerd-1.7-default.toml", 2},
		{"testdata/containerd-2.4-default.toml", 4},
	} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			cfg, err := LoadContainerdConfig(c.file)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Version != c.version || cfg.Root != DefaultContainerdRoot || cfg.State != DefaultContainerdState {
				t.Errorf("%+v, want version %d, root %s, state %s", cfg, c.version, DefaultContainerdRoot, DefaultContainerdState)
			}
			if got, want := cfg.TaskStateDir(), DefaultStateDir; got != want {
				t.Errorf("task state dir %s, want %s", got, want)
			}
		})
	}
	// The same from the binaries on this machine, generated now.
	for _, b := range oracleBinaries {
		t.Run(b.name+" config default", func(t *testing.T) {
			out, err := exec.Command(needBinary(t, b.path), "config", "default").Output()
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(f, out, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadContainerdConfig(f)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Version < 2 || cfg.Root != DefaultContainerdRoot || cfg.State != DefaultContainerdState {
				t.Errorf("%+v", cfg)
			}
		})
	}
}

// withKeys is a default configuration with its top-level root and state
// lines replaced.
func withKeys(t *testing.T, file, root, state string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := regexp.MustCompile(`(?m)^root = .*$`).ReplaceAllString(string(data), root)
	return regexp.MustCompile(`(?m)^state = .*$`).ReplaceAllString(s, state)
}

func TestLoadContainerdConfig(t *testing.T) {
	type files map[string]string // name -> content; "config.toml" is loaded
	cases := []struct {
		name        string
		files       files
		version     int
		root, state string // "" : containerd's default
		wantErr     bool
		oracleMax   int // ask only the binaries reading at most this version; 0: all
	}{
		{name: "1.6 default, root and state changed (version 2)",
			files:   files{"config.toml": withKeys(t, "testdata/containerd-1.6-default.toml", `root = "/data/ctr-root"`, `state = "/run/ctr-state"`)},
			version: 2, root: "/data/ctr-root", state: "/run/ctr-state"},
		{name: "2.4 default, root and state changed (version 4, literal strings)",
			files:   files{"config.toml": withKeys(t, "testdata/containerd-2.4-default.toml", `root = '/data/ctr-root'`, `state = '/run/ctr-state' # moved`)},
			version: 4, root: "/data/ctr-root", state: "/run/ctr-state"},
		{name: "version 3, as the README shows it",
			files: files{"config.toml": `version = 3
root = "/data/root"
state = "/run/state3"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.robust]
  runtime_type = 'io.containerd.runc.v2-robust'
`},
			version: 3, root: "/data/root", state: "/run/state3"},
		{name: "no version, keys quoted, escapes, comments",
			files: files{"config.toml": `# containerd
"root"   =   "/data/r\u006fot"   # a comment
'state' = '/run/C:\state'
`},
			version: 0, root: "/data/root", state: `/run/C:\state`},
		{name: "a multi-line array and a multi-line string before the keys",
			files: files{"config.toml": `version = 2
disabled_plugins = [
  "io.containerd.internal.v1.restart", # not [this]
  'io.containerd.snapshotter.v1.zfs',
]
temp = """
[not a table]
"""
required_plugins = []
root = "/data/after-array"
`},
			version: 2, root: "/data/after-array"},
		{name: "keys in a table are not containerd's",
			files: files{"config.toml": `version = 2
[plugins."io.containerd.internal.v1.opt"]
  root = "/not/this"
  state = "/nor/this"
`},
			version: 2},
		{name: "imports: relative glob, merged in order, later non-empty wins",
			files: files{
				"config.toml": `version = 2
root = "/data/main-root"
state = "/run/main-state"
imports = ["conf.d/*.toml", "extra.toml"]
`,
				"conf.d/10-state.toml": "version = 2\nstate = \"/run/from-conf-d\"\n",
				"conf.d/20-empty.toml": "version = 2\n",
				"extra.toml":           "version = 2\nroot = \"/data/from-extra\"\nimports = [\"config.toml\"]\n",
			},
			version: 2, root: "/data/from-extra", state: "/run/from-conf-d"},
		{name: "an import glob that matches nothing",
			files:   files{"config.toml": "version = 2\nstate = \"/run/s\"\nimports = [\"/nonexistent-conf.d/*.toml\"]\n"},
			version: 2, state: "/run/s"},
		// containerd 2.4's daemon refuses it too, but its `config dump`
		// ignores a missing file (any os.IsNotExist error): only 1.6 is
		// asked.
		{name: "a missing import", files: files{"config.toml": "version = 2\nimports = [\"/nonexistent.toml\"]\n"}, wantErr: true, oracleMax: 2},
		{name: "state is not a string", files: files{"config.toml": "version = 2\nstate = 42\n"}, wantErr: true},
		{name: "state is not terminated", files: files{"config.toml": "version = 2\nstate = \"/run/x\n"}, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(dir, "config.toml")
			cfg, err := LoadContainerdConfig(file)
			if c.wantErr {
				if err == nil {
					t.Errorf("no error; got %+v", cfg)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Version != c.version || cfg.Root != c.root || cfg.State != c.state {
					t.Errorf("version %d, root %q, state %q; want %d, %q, %q", cfg.Version, cfg.Root, cfg.State, c.version, c.root, c.state)
				}
			}
			// containerd's own loader agrees.
			for _, b := range oracleBinaries {
				if c.version > b.maxVersion || (c.oracleMax > 0 && b.maxVersion > c.oracleMax) {
					continue
				}
				root, state, ok := dumpKeys(t, needBinary(t, b.path), file)
				if c.wantErr {
					if ok {
						t.Errorf("%s accepts the file (root %q, state %q)", b.name, root, state)
					}
					continue
				}
				wantRoot, wantState := c.root, c.state
				if wantRoot == "" {
					wantRoot = DefaultContainerdRoot
				}
				if wantState == "" {
					wantState = DefaultContainerdState
				}
				if !ok || root != wantRoot || state != wantState {
					t.Errorf("%s: root %q, state %q (loaded %v); want %q, %q", b.name, root, state, ok, wantRoot, wantState)
				}
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := LoadContainerdConfig(filepath.Join(t.TempDir(), "none.toml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v, want fs.ErrNotExist", err)
		}
	})
}

func TestChooseStateDir(t *testing.T) {
	// A containerd state root as it looks on a node.
	stateRoot := t.TempDir()
	taskDir := filepath.Join(stateRoot, TaskStateDirName)
	for _, d := range []string{filepath.Join(taskDir, "default"), filepath.Join(stateRoot, "runc", "default")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	rootDir := t.TempDir()
	cfg := &ContainerdConfig{Path: "/etc/containerd/config.toml", Version: 2, Root: rootDir, State: stateRoot}
	plain := t.TempDir() // neither: taken as it is

	cases := []struct {
		name, flag, env string
		cfg             *ContainerdConfig
		dir, from       string
		note            bool
		err             error
	}{
		{name: "flag wins", flag: plain, env: "/env", cfg: cfg, dir: plain, from: "--state-dir"},
		{name: "environment next", env: plain, cfg: cfg, dir: plain, from: "$ENV"},
		{name: "then the configuration's state", cfg: cfg, dir: taskDir, from: "state in /etc/containerd/config.toml"},
		{name: "a configuration without state", cfg: &ContainerdConfig{Path: "/c.toml"}, dir: DefaultStateDir, from: "containerd's default (/c.toml sets no state)"},
		{name: "no configuration", dir: DefaultStateDir, from: "containerd's default"},
		{name: "the task state directory itself", flag: taskDir, cfg: cfg, dir: taskDir, from: "--state-dir"},
		{name: "containerd's state root", flag: stateRoot, dir: taskDir, from: "--state-dir", note: true},
		{name: "containerd's state root from the environment", env: stateRoot + "/", dir: taskDir, from: "$ENV", note: true},
		{name: "the configured state, no task yet", flag: "/run/ctr-state-none", cfg: &ContainerdConfig{State: "/run/ctr-state-none"},
			dir: "/run/ctr-state-none/" + TaskStateDirName, from: "--state-dir", note: true},
		{name: "containerd's root", flag: rootDir, cfg: cfg, err: ErrContainerdRoot},
		{name: "containerd's root's work directories", flag: filepath.Join(rootDir, TaskStateDirName), cfg: cfg, err: ErrContainerdRoot},
		{name: "the default root without configuration", flag: DefaultContainerdRoot, err: ErrContainerdRoot},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ChooseStateDir(c.flag, c.env, "ENV", c.cfg)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Errorf("error %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Dir != c.dir || got.From != c.from || (got.Note != "") != c.note {
				t.Errorf("%+v; want dir %s, from %q, a note %v", got, c.dir, c.from, c.note)
			}
			if c.note && !strings.Contains(got.Note, "containerd's state directory") {
				t.Errorf("note %q", got.Note)
			}
		})
	}
}

// TestLoadContainerdConfigNeverWaits: a FIFO (or any file that is not
// regular) named by --config or by an import is refused before it is read:
// gc never waits on it. A regular file over the size bound is refused too.
func TestLoadContainerdConfigNeverWaits(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", maxConfigSize)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, main, want string
	}{
		{"--config is a FIFO", fifo, "not a regular file"},
		{"an import is a FIFO", "version = 2\nimports = [\"fifo.toml\"]\n", "not a regular file"},
		{"an import is a character device", "version = 2\nimports = [\"/dev/null\"]\n", "not a regular file"},
		{"an import is too large", "version = 2\nimports = [\"big.toml\"]\n", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.main
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, "config.toml")
				if err := os.WriteFile(path, []byte(tc.main), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() {
				_, err := LoadContainerdConfig(path)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("LoadContainerdConfig: %v; want an error saying %q", err, tc.want)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("LoadContainerdConfig still reading after 3 s")
			}
		})
	}
}

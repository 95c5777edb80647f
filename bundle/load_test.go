package bundle

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"a", true},
		{"abc-123_x.y", true},
		{"k8s.io", true},
		{strings.Repeat("a", 76), true},
		{"", false},
		{strings.Repeat("a", 77), false},
		{"../x", false},
		{"..", false},
		{".", false},
		{"a/b", false},
		{"/a", false},
		{"a..b", false},
		{"-a", false},
		{"a b", false},
		{"a\x00b", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			for name, f := range map[string]func(string) error{"id": ValidateID, "namespace": ValidateNamespace} {
				err := f(tc.in)
				if (err == nil) != tc.ok {
					t.Errorf("%s %q: err = %v, want ok=%v", name, tc.in, err, tc.ok)
				}
				if err != nil && !errors.Is(err, ErrInvalid) {
					t.Errorf("%s %q: %v does not wrap ErrInvalidArgument", name, tc.in, err)
				}
			}
		})
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, path, ns, id string
	}{
		{"dotdot id", filepath.Join(dir, "x"), "default", "../x"},
		{"slash id", filepath.Join(dir, "b"), "default", "a/b"},
		{"empty id", dir, "default", ""},
		{"long id", filepath.Join(dir, strings.Repeat("a", 77)), "default", strings.Repeat("a", 77)},
		{"dotdot namespace", filepath.Join(dir, "id"), "..", "id"},
		{"slash namespace", filepath.Join(dir, "id"), "a/b", "id"},
		{"empty namespace", filepath.Join(dir, "id"), "", "id"},
		{"long namespace", filepath.Join(dir, "id"), strings.Repeat("n", 77), "id"},
		{"base is not id", filepath.Join(dir, "other"), "default", "id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Load(tc.path, tc.ns, tc.id)
			if err == nil {
				t.Fatalf("Load(%q, %q, %q) = %+v, want error", tc.path, tc.ns, tc.id, b)
			}
			if b != nil {
				t.Errorf("Load returned a bundle with error %v", err)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("Load created %v", ents)
	}
}

// fixture is a task directory as containerd and the runc shim leave it,
// with runc state under a temporary runc root and a PATH holding only a
// fake runc.
type fixture struct {
	root        string // everything below is in here
	ns, id      string
	dir         string // the task directory (bundle)
	work        string // the work directory the `work` link points at
	runcRoot    string // options.json's root
	defaultRoot string // what runcRootDefault points at during the test
	binDir      string // PATH
	runtime     string // an executable named by `runtime` and binary_name
}

const fixturePid = 4242

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{
		root:        root,
		ns:          "k8s.io",
		id:          "ctr-1",
		runcRoot:    filepath.Join(root, "runc"),
		defaultRoot: filepath.Join(root, "default-runc"),
		binDir:      filepath.Join(root, "bin"),
	}
	f.dir = filepath.Join(root, "state", TaskStateDirName, f.ns, f.id)
	f.work = filepath.Join(root, "lib", TaskStateDirName, f.ns, f.id)
	f.runtime = filepath.Join(f.binDir, "my-runc")
	for _, d := range []string{f.dir, f.work, f.binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, exe := range []string{f.runtime, filepath.Join(f.binDir, DefaultRuntime)} {
		if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", f.binDir)
	old := runcRootDefault
	runcRootDefault = f.defaultRoot
	t.Cleanup(func() { runcRootDefault = old })
	return f
}

func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

func (f *fixture) statePath(root string) string {
	return filepath.Join(root, f.ns, f.id, stateFile)
}

func (f *fixture) state() *libcontainer.State {
	return &libcontainer.State{
		BaseState: libcontainer.BaseState{
			ID:                   f.id,
			InitProcessPid:       fixturePid,
			InitProcessStartTime: 12345,
			Config: configs.Config{
				Rootfs: f.path(RootfsDir),
				Cgroups: &cgroups.Cgroup{
					Path:      "/" + f.ns + "/" + f.id,
					Resources: &cgroups.Resources{},
				},
			},
		},
		CgroupPaths: map[string]string{"pids": "/sys/fs/cgroup/pids/" + f.ns + "/" + f.id},
	}
}

func writeJSON(t *testing.T, p string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, data)
}

// writeAll writes every file of a healthy task directory and runc's state.
func (f *fixture) writeAll(t *testing.T) {
	t.Helper()
	writeFile(t, f.path(RuntimeFile), []byte(f.runtime))
	writeFile(t, f.path(InitPidFile), []byte("4242"))
	writeJSON(t, f.path(OptionsFile), map[string]any{"binary_name": f.runtime, "root": f.runcRoot})
	writeJSON(t, f.path(ConfigFile), &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: RootfsDir},
		Linux:   &specs.Linux{CgroupsPath: "/" + f.ns + "/" + f.id},
	})
	if err := os.Symlink(f.work, f.path(WorkLink)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.path(AddressFile), []byte("unix:///run/containerd/s/0123abcd"))
	writeJSON(t, f.statePath(f.runcRoot), f.state())
}

// garbage is random bytes with NULs and control characters, the same on
// every run.
func garbage() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := []byte("\x00\xff\xfe{\"\x01garbage\x7f\n\x1b[31m")
	for range 200 {
		b = append(b, byte(r.UintN(256)))
	}
	return b
}

// the files Load reads, by Problem.What, with where each lives.
var loadFiles = []string{RuntimeFile, InitPidFile, OptionsFile, ConfigFile, WorkLink, AddressFile, whatState}

func (f *fixture) fileFor(what string) string {
	if what == whatState {
		return f.statePath(f.runcRoot)
	}
	return f.path(what)
}

func (f *fixture) remove(t *testing.T, what string) {
	t.Helper()
	if err := os.Remove(f.fileFor(what)); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) replace(t *testing.T, what string, data []byte) {
	t.Helper()
	f.remove(t, what)
	writeFile(t, f.fileFor(what), data)
}

func (f *fixture) relink(t *testing.T, target string) {
	t.Helper()
	f.remove(t, WorkLink)
	if err := os.Symlink(target, f.path(WorkLink)); err != nil {
		t.Fatal(err)
	}
}

// want is a Problem expected from Load: its What and whether it wraps
// fs.ErrNotExist.
type want struct {
	what     string
	notExist bool
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(t *testing.T, f *fixture)
		problems []want
		check    func(t *testing.T, f *fixture, b *Bundle)
	}{
		{
			name:   "healthy",
			mutate: func(*testing.T, *fixture) {},
			check: func(t *testing.T, f *fixture, b *Bundle) {
				if b.Runtime != f.runtime || b.RuntimePath != f.runtime {
					t.Errorf("runtime = %q (%q), want %q", b.Runtime, b.RuntimePath, f.runtime)
				}
				if b.InitPid != fixturePid {
					t.Errorf("InitPid = %d", b.InitPid)
				}
				if b.Options == nil || b.Options.Root != f.runcRoot || b.Options.BinaryName != f.runtime {
					t.Errorf("Options = %+v", b.Options)
				}
				if b.RuncRoot != f.runcRoot || b.StateDir != filepath.Join(f.runcRoot, f.ns, f.id) {
					t.Errorf("RuncRoot = %q, StateDir = %q", b.RuncRoot, b.StateDir)
				}
				if b.Spec == nil || b.Spec.Linux == nil || b.Spec.Linux.CgroupsPath != "/"+f.ns+"/"+f.id {
					t.Errorf("Spec = %+v", b.Spec)
				}
				if b.WorkDir != f.work {
					t.Errorf("WorkDir = %q, want %q", b.WorkDir, f.work)
				}
				if b.Address != "unix:///run/containerd/s/0123abcd" {
					t.Errorf("Address = %q", b.Address)
				}
				if b.State == nil || b.State.ID != f.id || b.State.InitProcessPid != fixturePid || b.State.InitProcessStartTime != 12345 {
					t.Errorf("State = %+v", b.State)
				}
				if b.Missing {
					t.Error("Missing")
				}
			},
		},

		// runtime
		{name: "runtime missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, RuntimeFile) },
			problems: []want{{RuntimeFile, true}}, check: wantRuntimeFromOptions},
		{name: "runtime empty names none", mutate: func(t *testing.T, f *fixture) { f.replace(t, RuntimeFile, nil) },
			check: wantRuntimeFromOptions},
		{name: "runtime whitespace only", mutate: func(t *testing.T, f *fixture) { f.replace(t, RuntimeFile, []byte(" \n")) },
			problems: []want{{RuntimeFile, false}}, check: wantRuntimeFromOptions},
		{name: "runtime garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, RuntimeFile, garbage()) },
			problems: []want{{RuntimeFile, false}}, check: wantRuntimeFromOptions},
		{name: "runtime absurdly long", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, RuntimeFile, []byte(strings.Repeat("r", maxNameLen+1)))
		}, problems: []want{{RuntimeFile, false}}, check: wantRuntimeFromOptions},
		{name: "runtime with trailing newline", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, RuntimeFile, []byte(f.runtime+"\n"))
		}, check: wantRuntimeFromOptions},
		{name: "runtime is a symlink", mutate: func(t *testing.T, f *fixture) {
			f.remove(t, RuntimeFile)
			if err := os.Symlink("/dev/zero", f.path(RuntimeFile)); err != nil {
				t.Fatal(err)
			}
		}, problems: []want{{RuntimeFile, false}}, check: wantRuntimeFromOptions},
		{name: "runtime binary not found", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, RuntimeFile, []byte("/nonexistent/bundletest-runc"))
		}, problems: []want{{whatBinary, true}}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if b.Runtime != "/nonexistent/bundletest-runc" || b.RuntimePath != "" {
				t.Errorf("runtime = %q (%q)", b.Runtime, b.RuntimePath)
			}
		}},
		{name: "runtime and binary_name missing", mutate: func(t *testing.T, f *fixture) {
			f.remove(t, RuntimeFile)
			writeJSON(t, f.path(OptionsFile), map[string]any{"root": f.runcRoot})
		}, problems: []want{{RuntimeFile, true}}, check: wantDefaultRuntime},

		// init.pid
		{name: "init.pid missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, InitPidFile) },
			problems: []want{{InitPidFile, true}}, check: wantPid(0)},
		{name: "init.pid empty", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, nil) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, garbage()) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid zero", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, []byte("0")) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid negative", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, []byte("-7")) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid huge", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, []byte("99999999999")) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid newline like go-runc", mutate: func(t *testing.T, f *fixture) { f.replace(t, InitPidFile, []byte("4242\n")) },
			problems: []want{{InitPidFile, false}}, check: wantPid(0)},
		{name: "init.pid is a FIFO", mutate: func(t *testing.T, f *fixture) {
			f.remove(t, InitPidFile)
			if err := mkfifo(f.path(InitPidFile)); err != nil {
				t.Fatal(err)
			}
		}, problems: []want{{InitPidFile, false}}, check: wantPid(0)},

		// options.json: without it the runc root is the default, where
		// there is no state.
		{name: "options.json missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, OptionsFile) },
			problems: []want{{OptionsFile, true}, {whatState, true}}, check: wantNoOptions},
		{name: "options.json empty", mutate: func(t *testing.T, f *fixture) { f.replace(t, OptionsFile, nil) },
			problems: []want{{OptionsFile, false}, {whatState, true}}, check: wantNoOptions},
		{name: "options.json garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, OptionsFile, garbage()) },
			problems: []want{{OptionsFile, false}, {whatState, true}}, check: wantNoOptions},
		{name: "options.json null", mutate: func(t *testing.T, f *fixture) { f.replace(t, OptionsFile, []byte("null")) },
			problems: []want{{OptionsFile, false}, {whatState, true}}, check: wantNoOptions},
		{name: "options.json wrong types", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, OptionsFile, []byte(`{"root": 42}`))
		}, problems: []want{{OptionsFile, false}, {whatState, true}}, check: wantNoOptions},
		{name: "options.json relative root", mutate: func(t *testing.T, f *fixture) {
			writeJSON(t, f.path(OptionsFile), map[string]any{"root": "relative/runc"})
		}, problems: []want{{OptionsFile, false}, {whatState, true}}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if b.Options == nil || b.RuncRoot != f.defaultRoot {
				t.Errorf("Options = %+v, RuncRoot = %q", b.Options, b.RuncRoot)
			}
		}},
		{name: "options.json garbage binary_name", mutate: func(t *testing.T, f *fixture) {
			f.remove(t, RuntimeFile)
			writeJSON(t, f.path(OptionsFile), map[string]any{"root": f.runcRoot, "binary_name": "run\x01c"})
		}, problems: []want{{RuntimeFile, true}, {OptionsFile, false}}, check: wantDefaultRuntime},

		// config.json
		{name: "config.json missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, ConfigFile) },
			problems: []want{{ConfigFile, true}}, check: wantNoSpec},
		{name: "config.json empty", mutate: func(t *testing.T, f *fixture) { f.replace(t, ConfigFile, nil) },
			problems: []want{{ConfigFile, false}}, check: wantNoSpec},
		{name: "config.json garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, ConfigFile, garbage()) },
			problems: []want{{ConfigFile, false}}, check: wantNoSpec},
		{name: "config.json truncated", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, ConfigFile, []byte(`{"ociVersion": "1.0.2", "linux": {"cgroupsPath": "/k8s`))
		}, problems: []want{{ConfigFile, false}}, check: wantNoSpec},

		// work
		{name: "work missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, WorkLink) },
			problems: []want{{WorkLink, true}}, check: wantNoWork},
		{name: "work empty file", mutate: func(t *testing.T, f *fixture) { f.replace(t, WorkLink, nil) },
			problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work garbage file", mutate: func(t *testing.T, f *fixture) { f.replace(t, WorkLink, garbage()) },
			problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work garbage target", mutate: func(t *testing.T, f *fixture) {
			f.relink(t, strings.ReplaceAll(string(garbage()), "\x00", ""))
		}, problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work relative target", mutate: func(t *testing.T, f *fixture) {
			f.relink(t, filepath.Join("lib", TaskStateDirName, f.ns, f.id))
		}, problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work target of another task", mutate: func(t *testing.T, f *fixture) {
			f.relink(t, filepath.Join("/var/lib/containerd", TaskStateDirName, f.ns, "other"))
		}, problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work target escaping by dotdot", mutate: func(t *testing.T, f *fixture) {
			f.relink(t, filepath.Join("/var/lib/containerd", TaskStateDirName, f.ns, f.id)+"/..")
		}, problems: []want{{WorkLink, false}}, check: wantNoWork},
		{name: "work target unclean but valid", mutate: func(t *testing.T, f *fixture) {
			f.relink(t, "/var/lib//containerd/./"+TaskStateDirName+"/"+f.ns+"/"+f.id+"/")
		}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if want := filepath.Join("/var/lib/containerd", TaskStateDirName, f.ns, f.id); b.WorkDir != want {
				t.Errorf("WorkDir = %q, want %q", b.WorkDir, want)
			}
		}},

		// address
		{name: "address missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, AddressFile) },
			problems: []want{{AddressFile, true}}, check: wantNoAddress},
		{name: "address empty", mutate: func(t *testing.T, f *fixture) { f.replace(t, AddressFile, nil) },
			problems: []want{{AddressFile, false}}, check: wantNoAddress},
		{name: "address garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, AddressFile, garbage()) },
			problems: []want{{AddressFile, false}}, check: wantNoAddress},
		{name: "address not unix", mutate: func(t *testing.T, f *fixture) { f.replace(t, AddressFile, []byte("tcp://127.0.0.1:1")) },
			problems: []want{{AddressFile, false}}, check: wantNoAddress},

		// runc's state.json
		{name: "state.json missing", mutate: func(t *testing.T, f *fixture) { f.remove(t, whatState) },
			problems: []want{{whatState, true}}, check: wantNoState},
		{name: "state.json empty", mutate: func(t *testing.T, f *fixture) { f.replace(t, whatState, nil) },
			problems: []want{{whatState, false}}, check: wantNoState},
		{name: "state.json garbage", mutate: func(t *testing.T, f *fixture) { f.replace(t, whatState, garbage()) },
			problems: []want{{whatState, false}}, check: wantNoState},
		{name: "state.json empty object", mutate: func(t *testing.T, f *fixture) { f.replace(t, whatState, []byte("{}")) },
			problems: []want{{whatState, false}}, check: wantNoState},
		{name: "state.json without cgroups", mutate: func(t *testing.T, f *fixture) {
			f.replace(t, whatState, []byte(`{"id": "ctr-1", "init_process_pid": 4242, "config": {}}`))
		}, problems: []want{{whatState, false}}, check: wantNoState},
		{name: "state.json of another container", mutate: func(t *testing.T, f *fixture) {
			st := f.state()
			st.ID = "other"
			f.remove(t, whatState)
			writeJSON(t, f.fileFor(whatState), st)
		}, problems: []want{{whatState, false}}, check: wantNoState},

		// everything at once
		{name: "every file missing", mutate: func(t *testing.T, f *fixture) {
			for _, what := range loadFiles {
				f.remove(t, what)
			}
		}, problems: []want{
			{RuntimeFile, true}, {InitPidFile, true}, {OptionsFile, true}, {ConfigFile, true},
			{WorkLink, true}, {AddressFile, true}, {whatState, true},
		}, check: func(t *testing.T, f *fixture, b *Bundle) {
			wantDefaultRuntime(t, f, b)
			wantNothing(t, f, b)
		}},
		{name: "every file garbage", mutate: func(t *testing.T, f *fixture) {
			for _, what := range loadFiles {
				f.replace(t, what, garbage())
			}
			// runc state at the default root too: options.json is garbage.
			writeFile(t, f.statePath(f.defaultRoot), garbage())
		}, problems: []want{
			{RuntimeFile, false}, {InitPidFile, false}, {OptionsFile, false}, {ConfigFile, false},
			{WorkLink, false}, {AddressFile, false}, {whatState, false},
		}, check: func(t *testing.T, f *fixture, b *Bundle) {
			wantDefaultRuntime(t, f, b)
			wantNothing(t, f, b)
		}},
		{name: "every file empty", mutate: func(t *testing.T, f *fixture) {
			for _, what := range loadFiles {
				f.replace(t, what, nil)
			}
		}, problems: []want{
			{InitPidFile, false}, {OptionsFile, false}, {ConfigFile, false},
			{WorkLink, false}, {AddressFile, false}, {whatState, true},
		}, check: func(t *testing.T, f *fixture, b *Bundle) {
			wantDefaultRuntime(t, f, b)
			wantNothing(t, f, b)
		}},

		// the task directory itself
		{name: "bundle missing, runc state left", mutate: func(t *testing.T, f *fixture) {
			if err := os.RemoveAll(f.dir); err != nil {
				t.Fatal(err)
			}
			writeJSON(t, f.statePath(f.defaultRoot), f.state())
		}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if !b.Missing {
				t.Error("not Missing")
			}
			if b.RuncRoot != f.defaultRoot || b.StateDir != filepath.Join(f.defaultRoot, f.ns, f.id) {
				t.Errorf("RuncRoot = %q, StateDir = %q", b.RuncRoot, b.StateDir)
			}
			if b.State == nil || b.State.ID != f.id || b.State.InitProcessPid != fixturePid {
				t.Errorf("State = %+v", b.State)
			}
			wantDefaultRuntime(t, f, b)
		}},
		{name: "bundle and runc state missing", mutate: func(t *testing.T, f *fixture) {
			if err := os.RemoveAll(f.dir); err != nil {
				t.Fatal(err)
			}
		}, problems: []want{{whatState, true}}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if !b.Missing {
				t.Error("not Missing")
			}
			wantNothing(t, f, b)
			if b.StateDir != filepath.Join(f.defaultRoot, f.ns, f.id) {
				t.Errorf("StateDir = %q", b.StateDir)
			}
		}},
		{name: "bundle is a file", mutate: func(t *testing.T, f *fixture) {
			if err := os.RemoveAll(f.dir); err != nil {
				t.Fatal(err)
			}
			writeFile(t, f.dir, garbage())
		}, problems: []want{{whatTaskDir, false}, {whatState, true}}, check: func(t *testing.T, f *fixture, b *Bundle) {
			if b.Missing {
				t.Error("Missing although something is there to remove")
			}
			wantNothing(t, f, b)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeAll(t)
			tc.mutate(t, f)
			before := snapshot(t, f.root)

			b, err := Load(f.dir, f.ns, f.id)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if b.Path != f.dir || b.Namespace != f.ns || b.ID != f.id {
				t.Errorf("Path, Namespace, ID = %q, %q, %q", b.Path, b.Namespace, b.ID)
			}
			checkProblems(t, b.Problems, tc.problems)
			if tc.check != nil {
				tc.check(t, f, b)
			}
			after := snapshot(t, f.root)
			if !equalSnapshots(before, after) {
				t.Errorf("Load changed the tree:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func checkProblems(t *testing.T, got []Problem, want []want) {
	t.Helper()
	var gotWhat, wantWhat []string
	for _, p := range got {
		gotWhat = append(gotWhat, p.What)
	}
	for _, w := range want {
		wantWhat = append(wantWhat, w.what)
	}
	if !slices.Equal(sorted(gotWhat), sorted(wantWhat)) {
		t.Fatalf("problems = %v, want %v", got, wantWhat)
	}
	for _, w := range want {
		for _, p := range got {
			if p.What != w.what {
				continue
			}
			if errors.Is(p, fs.ErrNotExist) != w.notExist {
				t.Errorf("problem %v: errors.Is(fs.ErrNotExist) = %v, want %v", p, !w.notExist, w.notExist)
			}
			if p.Error() == "" || !strings.HasPrefix(p.Error(), p.What+": ") {
				t.Errorf("problem message %q", p.Error())
			}
		}
	}
}

func wantRuntimeFromOptions(t *testing.T, f *fixture, b *Bundle) {
	t.Helper()
	if b.Runtime != f.runtime || b.RuntimePath != f.runtime {
		t.Errorf("runtime = %q (%q), want options' %q", b.Runtime, b.RuntimePath, f.runtime)
	}
}

func wantDefaultRuntime(t *testing.T, f *fixture, b *Bundle) {
	t.Helper()
	if b.Runtime != DefaultRuntime || b.RuntimePath != filepath.Join(f.binDir, DefaultRuntime) {
		t.Errorf("runtime = %q (%q), want %q from PATH", b.Runtime, b.RuntimePath, DefaultRuntime)
	}
}

func wantPid(pid int) func(*testing.T, *fixture, *Bundle) {
	return func(t *testing.T, _ *fixture, b *Bundle) {
		t.Helper()
		if b.InitPid != pid {
			t.Errorf("InitPid = %d, want %d", b.InitPid, pid)
		}
	}
}

func wantNoOptions(t *testing.T, f *fixture, b *Bundle) {
	t.Helper()
	if b.Options != nil {
		t.Errorf("Options = %+v", b.Options)
	}
	if b.RuncRoot != f.defaultRoot || b.StateDir != filepath.Join(f.defaultRoot, f.ns, f.id) {
		t.Errorf("RuncRoot = %q, StateDir = %q", b.RuncRoot, b.StateDir)
	}
	if b.State != nil {
		t.Errorf("State = %+v", b.State)
	}
	// `runtime` still names the binary.
	if b.Runtime != f.runtime {
		t.Errorf("Runtime = %q", b.Runtime)
	}
}

func wantNoSpec(t *testing.T, _ *fixture, b *Bundle) {
	t.Helper()
	if b.Spec != nil {
		t.Errorf("Spec = %+v", b.Spec)
	}
}

func wantNoWork(t *testing.T, _ *fixture, b *Bundle) {
	t.Helper()
	if b.WorkDir != "" {
		t.Errorf("WorkDir = %q", b.WorkDir)
	}
}

func wantNoAddress(t *testing.T, _ *fixture, b *Bundle) {
	t.Helper()
	if b.Address != "" {
		t.Errorf("Address = %q", b.Address)
	}
}

func wantNoState(t *testing.T, _ *fixture, b *Bundle) {
	t.Helper()
	if b.State != nil {
		t.Errorf("State = %+v", b.State)
	}
}

func wantNothing(t *testing.T, f *fixture, b *Bundle) {
	t.Helper()
	if b.InitPid != 0 || b.Options != nil || b.Spec != nil || b.State != nil || b.WorkDir != "" || b.Address != "" {
		t.Errorf("bundle = %+v, want nothing learnt", b)
	}
	if b.RuncRoot != f.defaultRoot {
		t.Errorf("RuncRoot = %q, want the default", b.RuncRoot)
	}
}

// TestLoadRuncState decodes state.json written through runc's own
// libcontainer.State (v1.3.x, the version this module pins) into RuncState:
// the fields the delete path uses must survive, for the cgroupfs and the
// systemd cgroup driver alike.
func TestLoadRuncState(t *testing.T) {
	f := newFixture(t)

	t.Run("cgroupfs", func(t *testing.T) {
		want := f.state()
		writeJSON(t, f.statePath(f.runcRoot), want)
		st, err := ReadRuncState(f.runcRoot, f.ns, f.id)
		if err != nil {
			t.Fatal(err)
		}
		if st.ID != f.id || st.InitProcessPid != fixturePid || st.InitProcessStartTime != want.InitProcessStartTime ||
			st.Config.Cgroups.Path != "/"+f.ns+"/"+f.id || st.Config.Cgroups.Systemd {
			t.Errorf("state = %+v", st)
		}
		if len(st.CgroupPaths) == 0 || !maps.Equal(st.CgroupPaths, want.CgroupPaths) {
			t.Errorf("cgroup paths = %v, want %v", st.CgroupPaths, want.CgroupPaths)
		}
	})

	t.Run("poststop hooks", func(t *testing.T) {
		st := f.state()
		root := filepath.Join(t.TempDir(), "runc")
		writeJSON(t, f.statePath(root), st)
		got, err := ReadRuncState(root, f.ns, f.id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Config.HasPoststopHooks() {
			t.Errorf("no hooks configured, HasPoststopHooks says %v", got.Config.Hooks)
		}
		st.Config.Hooks = configs.Hooks{
			configs.Prestart: {configs.NewCommandHook(&configs.Command{Path: "/bin/true"})},
			configs.Poststop: {configs.NewCommandHook(&configs.Command{Path: "/bin/true", Args: []string{"true"}})},
		}
		writeJSON(t, f.statePath(root), st)
		if got, err = ReadRuncState(root, f.ns, f.id); err != nil {
			t.Fatal(err)
		}
		if !got.Config.HasPoststopHooks() {
			t.Errorf("poststop hook configured, HasPoststopHooks says %v", got.Config.Hooks)
		}
	})

	t.Run("systemd driver", func(t *testing.T) {
		st := f.state()
		st.Config.Cgroups = &cgroups.Cgroup{
			Parent: "system.slice", ScopePrefix: "cri-containerd", Name: f.id,
			Systemd: true, Resources: &cgroups.Resources{},
		}
		root := filepath.Join(t.TempDir(), "runc")
		writeJSON(t, f.statePath(root), st)
		got, err := ReadRuncState(root, f.ns, f.id)
		if err != nil {
			t.Fatal(err)
		}
		c := got.Config.Cgroups
		if got.ID != f.id || got.InitProcessPid != fixturePid || !c.Systemd ||
			c.Parent != "system.slice" || c.ScopePrefix != "cri-containerd" || c.Name != f.id {
			t.Errorf("state = %+v, cgroups = %+v", got, c)
		}
	})

	t.Run("symlinked state.json is not followed", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), "runc")
		target := filepath.Join(t.TempDir(), "state.json")
		writeJSON(t, target, f.state())
		if err := os.MkdirAll(filepath.Join(root, f.ns, f.id), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, f.statePath(root)); err != nil {
			t.Fatal(err)
		}
		if st, err := ReadRuncState(root, f.ns, f.id); err == nil {
			t.Errorf("state = %+v, want an error", st)
		}
	})
}

func mkfifo(p string) error { return unix.Mkfifo(p, 0o600) }

func TestReadRuncStateMissing(t *testing.T) {
	if st, err := ReadRuncState(t.TempDir(), "default", "web"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadRuncState of an empty runc root = %+v, %v; want an error wrapping fs.ErrNotExist", st, err)
	}
}

func TestReadShimBinaryPath(t *testing.T) {
	const shim = "/usr/bin/containerd-shim-runc-v2"
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T, p string)
		want    string
		missing bool // error wraps fs.ErrNotExist
		errHas  string
	}{
		{name: "absolute path", make: fileWith(shim), want: shim},
		{name: "trailing newline", make: fileWith(shim + "\n"), want: shim},
		{name: "missing", make: func(*testing.T, string) {}, missing: true},
		{name: "relative path", make: fileWith("containerd-shim-runc-v2"), errHas: "not an absolute path"},
		{name: "empty", make: fileWith(""), errHas: "not an absolute path"},
		{name: "control character", make: fileWith("/usr/bin/shim\x00x"), errHas: "not an absolute path"},
		{name: "too large", make: fileWith("/" + strings.Repeat("a", maxSmallFile)), errHas: "larger than"},
		{name: "symlink", make: func(t *testing.T, p string) {
			target := filepath.Join(t.TempDir(), "target")
			fileWith(shim)(t, target)
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, errHas: "symbolic link, not followed"},
		{name: "fifo", make: func(t *testing.T, p string) {
			if err := mkfifo(p); err != nil {
				t.Fatal(err)
			}
		}, errHas: "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.make(t, filepath.Join(dir, ShimBinaryPathFile))
			got, err := ReadShimBinaryPath(dir)
			switch {
			case tc.want != "":
				if err != nil || got != tc.want {
					t.Errorf("ReadShimBinaryPath = %q, %v; want %q", got, err, tc.want)
				}
			case tc.missing:
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("ReadShimBinaryPath = %q, %v; want an error wrapping fs.ErrNotExist", got, err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.errHas) || errors.Is(err, fs.ErrNotExist):
				t.Errorf("ReadShimBinaryPath = %q, %v; want an error saying %q", got, err, tc.errHas)
			}
		})
	}
}

func fileWith(content string) func(t *testing.T, p string) {
	return func(t *testing.T, p string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// layoutDir makes <tmp>/<state>/io.containerd.runtime.v2.task/<ns>/<id>
// (not created when create is false) and returns it.
func layoutDir(t *testing.T, ns, id string, create bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "state", TaskStateDirName, ns, id)
	if create {
		mkdir(t, p)
	}
	return p
}

// entry is one name to make in a test directory.
type entry struct {
	name, content string
	kind          entryKind
	target        string // for a symlink
}

func makeEntries(t *testing.T, dir string, es []entry) {
	t.Helper()
	for _, e := range es {
		p := filepath.Join(dir, e.name)
		var err error
		switch e.kind {
		case kindRegular:
			err = os.WriteFile(p, []byte(e.content), 0o644)
		case kindDir:
			err = os.MkdirAll(p, 0o755)
		case kindSymlink:
			err = os.Symlink(e.target, p)
		case kindFIFO:
			err = unix.Mkfifo(p, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckTaskDir(t *testing.T) {
	const ns, id = "default", "web"
	work := "/var/lib/containerd/" + TaskStateDirName + "/" + ns + "/" + id
	containerd17 := []entry{
		{name: RootfsDir, kind: kindDir}, {name: WorkLink, kind: kindSymlink, target: work},
		{name: ConfigFile, content: "{}"}, {name: AddressFile, content: "unix:///run/containerd/s/" + strings.Repeat("ab", 32)},
		{name: InitPidFile, content: "42"}, {name: OptionsFile, content: "{}"}, {name: RuntimeFile},
		{name: "log", kind: kindFIFO}, {name: "log.json"}, {name: ShimBinaryPathFile, content: "/usr/bin/containerd-shim-runc-v2"},
		{name: "exec-1.pid", content: "43"}, {name: ".init.pid", content: "42"}, {name: "123456789"},
	}
	containerd24 := []entry{
		{name: RootfsDir, kind: kindDir}, {name: WorkLink, kind: kindSymlink, target: work},
		{name: ConfigFile, content: "{}"}, {name: BootstrapFile, content: `{"version":3,"address":"unix:///run/containerd/s/x","protocol":"ttrpc"}`},
		{name: SocketDirLink, kind: kindSymlink, target: "/run/containerd/s"}, {name: ExitFile, content: "{}"}, {name: SandboxFile, content: "pod"},
	}
	for _, tc := range []struct {
		name    string
		layout  bool // under <state>/io.containerd.runtime.v2.task/<ns>/
		entries []entry
		missing bool
		want    string // "" for evidence, else a piece of the error
	}{
		{name: "layout, empty", layout: true},
		{name: "layout, anything in it (hooks write in bundles)", layout: true, entries: []entry{{name: "hook-output.txt", content: "x"}}},
		{name: "layout, gone", layout: true, missing: true},
		{name: "containerd 1.7's task directory elsewhere", entries: containerd17},
		{name: "containerd 2.4's task directory elsewhere", entries: containerd24},
		{name: "work link alone", entries: []entry{{name: WorkLink, kind: kindSymlink, target: work}}},
		{name: "what a delete stopped half-way leaves: rootfs with the guard", entries: []entry{{name: RootfsDir, kind: kindDir}, {name: RootfsDir + "/" + GuardFile, content: guardText}}},
		{name: "gone, not the layout", missing: true},
		{name: "empty user directory", want: "holds neither"},
		{name: "an operator's OCI bundle: config.json and rootfs", entries: []entry{{name: ConfigFile, content: "{}"}, {name: RootfsDir, kind: kindDir}}, want: "holds neither"},
		{name: "a web app with options.json and runtime", entries: []entry{{name: OptionsFile, content: "{}"}, {name: RuntimeFile, content: "node"}, {name: "index.html", content: "<html>"}}, want: `"index.html"`},
		{name: "task files and a user's file", entries: append([]entry{{name: "notes.txt", content: "mine"}}, containerd17...), want: `"notes.txt"`},
		{name: "log is a directory of the user's logs", entries: []entry{{name: WorkLink, kind: kindSymlink, target: work}, {name: "log", kind: kindDir}}, want: "log is not a FIFO"},
		{name: "rootfs is a symlink", entries: []entry{{name: WorkLink, kind: kindSymlink, target: work}, {name: RootfsDir, kind: kindSymlink, target: "/"}}, want: "rootfs is not a directory"},
		{name: "work link to elsewhere", entries: []entry{{name: WorkLink, kind: kindSymlink, target: "/srv/data"}, {name: ConfigFile, content: "{}"}}, want: "holds neither"},
		{name: "work link of another task", entries: []entry{{name: WorkLink, kind: kindSymlink, target: "/var/lib/containerd/" + TaskStateDirName + "/" + ns + "/other"}}, want: "holds neither"},
		{name: "address that is not an address", entries: []entry{{name: AddressFile, content: "hello"}}, want: "holds neither"},
		{name: "bootstrap.json without an address", entries: []entry{{name: BootstrapFile, content: `{"version":3}`}}, want: "holds neither"},
		{name: "address is a directory", entries: []entry{{name: AddressFile, kind: kindDir}}, want: "address is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dir string
			if tc.layout {
				dir = layoutDir(t, ns, id, !tc.missing)
			} else {
				dir = filepath.Join(t.TempDir(), ns, id)
				if !tc.missing {
					mkdir(t, dir)
				}
			}
			if !tc.missing {
				makeEntries(t, dir, tc.entries)
			}
			var before map[string]string
			if !tc.missing {
				before = snapshot(t, dir)
			}
			ev, err := CheckTaskDir(dir, ns, id)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckTaskDir: %v; want evidence", err)
				}
				if ev.Layout != tc.layout || ev.Missing != tc.missing || (!tc.layout && !tc.missing && len(ev.Markers) == 0) {
					t.Errorf("evidence %+v", ev)
				}
			} else {
				if !errors.Is(err, ErrNotTaskDir) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("CheckTaskDir = %+v, %v; want ErrNotTaskDir saying %q", ev, err, tc.want)
				}
			}
			if !tc.missing && !equalSnapshots(before, snapshot(t, dir)) {
				t.Error("CheckTaskDir changed the directory")
			}
		})
	}
}

func TestCheckTaskDirRefusesWhatIsNotADirectory(t *testing.T) {
	const ns, id = "default", "web"
	target := t.TempDir()
	for _, tc := range []struct {
		name string
		make func(p string) error
		want string
	}{
		{"symlink to a directory", func(p string) error { return os.Symlink(target, p) }, "symbolic link"},
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("x"), 0o644) }, "not a directory"},
		{"FIFO", func(p string) error { return unix.Mkfifo(p, 0o600) }, "not a directory"},
	} {
		for _, layout := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), ns, id)
				if layout {
					p = layoutDir(t, ns, id, false)
				}
				mkdir(t, filepath.Dir(p))
				if err := tc.make(p); err != nil {
					t.Fatal(err)
				}
				if _, err := CheckTaskDir(p, ns, id); !errors.Is(err, ErrNotTaskDir) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("CheckTaskDir: %v; want ErrNotTaskDir saying %q", err, tc.want)
				}
			})
		}
	}
}

func TestCheckTaskDirRefusesBadNames(t *testing.T) {
	dir := layoutDir(t, "default", "web", true)
	for _, tc := range []struct{ path, ns, id string }{
		{dir, "default", "other"},  // base name is not the id
		{dir, "default", "../web"}, // invalid id
		{dir, "a/b", "web"},        // invalid namespace
		{dir, "other", "web"},      // another namespace: not the layout, and empty
	} {
		if _, err := CheckTaskDir(tc.path, tc.ns, tc.id); !errors.Is(err, ErrNotTaskDir) {
			t.Errorf("CheckTaskDir(%s, %s, %s): %v; want ErrNotTaskDir", tc.path, tc.ns, tc.id, err)
		}
	}
}

// TestIsTaskLayoutNotContainerdRoot: <root>/io.containerd.runtime.v2.task
// holds the tasks' work directories under the same names; containerd's root
// is told by its metadata store.
func TestIsTaskLayoutNotContainerdRoot(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, TaskStateDirName, "default", "web")
	mkdir(t, dir)
	if !IsTaskLayout(dir, "default", "web") {
		t.Fatal("a state root's task directory is not the layout")
	}
	mkdir(t, filepath.Join(root, containerdRootMarker))
	if IsTaskLayout(dir, "default", "web") {
		t.Fatal("a work directory under containerd's root counts as the layout")
	}
	if _, err := CheckTaskDir(dir, "default", "web"); !errors.Is(err, ErrNotTaskDir) {
		t.Fatalf("an empty work directory under containerd's root: %v; want ErrNotTaskDir", err)
	}
}

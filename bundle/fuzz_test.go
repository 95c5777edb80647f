package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Fuzz targets for everything the delete path parses in a task directory
// (issue 11, "hostile and garbage task directories"). The seed corpus is in
// testdata/fuzz/<Target>/: files written by containerd 1.6, 2.4 and runc
// (captured from the e2e runs) and files written by hand in the exact
// formats of containerd 1.7.35 and 2.4.2's sources. `make fuzz` runs each
// target for $(FUZZTIME) and copies what it found into testdata;
// `make fuzz-short` runs each for seconds.
//
// Inputs may hold the token "$T": it is replaced by the iteration's
// temporary directory, so that the `work` and `s` links, options.json's
// root and the socket address can name the fixture's own work directory,
// runc root and socket directory (see fuzzTree) as well as host paths.
// Nothing outside the temporary directory is ever created, changed or
// removed: Load only reads, and RemoveDeadSocket is only ever handed a
// socket directory inside it.
//
// Not asserted here: that a pid named only by init.pid is never signalled.
// Load records it as Bundle.InitPid, "a claim, never proof"; the choice of
// what to signal is package deletion's (kill: runc's init only through
// cgroups.KillVerified with state.json's start time, init.pid's pid only
// through cgroups.Set.KillMember, i.e. membership in the container's
// cgroups), and it signals. FuzzLoad asserts what bundle owns of it: init.pid
// never reaches State (the only pid deletion kills by start time), and
// cgroups' FuzzFind asserts that the membership proof never admits this
// process, its parent or pid 1.

// fuzzToken is replaced by the iteration's temporary directory in every input.
const fuzzToken = "$T"

// fuzzShimSocket is a socket name of containerd's form (64 hex digits):
// only such a socket is ever removed.
const fuzzShimSocket = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// fuzzTree is the layout FuzzLoad and FuzzRemoveDeadSocket build in a
// temporary directory T:
//
//	T/state/io.containerd.runtime.v2.task/<ns>/<id>/  the task directory
//	T/root/io.containerd.runtime.v2.task/<ns>/<id>/   its work directory
//	T/runc/<ns>/<id>/state.json                         runc's state (options.json root "$T/runc")
//	T/default-runc/<ns>/<id>/state.json                 runc's state under the default root
//	T/s/{dead,live,file}                                the socket directory: a dead socket, a live one, a regular file
//	T/s/<fuzzShimSocket>                                a dead socket named as containerd names them
//	T/outside/{dead,<fuzzShimSocket>}                   dead sockets outside it
//	T/s-link -> T/outside                               a socket directory reached through a link
type fuzzTree struct {
	root     string
	taskDir  string
	workDir  string
	sockDir  string
	live     string
	listener net.Listener
}

func newFuzzTree(t *testing.T, ns, id string) *fuzzTree {
	t.Helper()
	// A short root: a socket's path must fit in 108 bytes, and a
	// t.TempDir's holds the test's name.
	root, err := os.MkdirTemp("", "fz")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ft := &fuzzTree{
		root:    root,
		taskDir: filepath.Join(root, "state", TaskStateDirName, ns, id),
		workDir: filepath.Join(root, "root", TaskStateDirName, ns, id),
		sockDir: filepath.Join(root, "s"),
	}
	for _, d := range []string{ft.taskDir, ft.workDir, ft.sockDir, filepath.Join(root, "outside")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(ft.workDir, "log.json"), []byte("{}"))
	writeFile(t, filepath.Join(ft.sockDir, "file"), []byte("not a socket"))
	deadSocket(t, filepath.Join(ft.sockDir, "dead"))
	deadSocket(t, filepath.Join(root, "outside", "dead"))
	deadSocket(t, filepath.Join(ft.sockDir, fuzzShimSocket))
	deadSocket(t, filepath.Join(root, "outside", fuzzShimSocket))
	if err := os.Symlink(filepath.Join(root, "outside"), filepath.Join(root, "s-link")); err != nil {
		t.Fatal(err)
	}
	ft.live = filepath.Join(ft.sockDir, "live")
	l, err := net.Listen("unix", ft.live)
	if err != nil {
		t.Fatalf("listen %s: %v", ft.live, err)
	}
	ft.listener = l
	t.Cleanup(func() { l.Close() })
	return ft
}

// deadSocket leaves a socket file nobody listens on, as a dead shim does.
func deadSocket(t *testing.T, p string) {
	t.Helper()
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatalf("listen %s: %v", p, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// inside reports whether dir, with every symbolic link resolved, exists
// inside the fixture. Only such a directory is handed to RemoveDeadSocket
// as the socket directory: the fixture holds links the fuzz input points
// anywhere (work, s, hostile files), and a socket directory reached through
// one could be the host's.
func (ft *fuzzTree) inside(dir string) bool {
	if !filepath.IsAbs(dir) {
		return false
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	root, err := filepath.EvalSymlinks(ft.root)
	if err != nil {
		return false
	}
	return real == root || strings.HasPrefix(real, root+"/")
}

func (ft *fuzzTree) expand(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte(fuzzToken), []byte(ft.root))
}

// setupFuzzEnv points PATH at a directory holding only an executable named
// DefaultRuntime for the whole fuzz run, and restores PATH and
// runcRootDefault at the end.
func setupFuzzEnv(f *testing.F) {
	f.Helper()
	bin := f.TempDir()
	if err := os.WriteFile(filepath.Join(bin, DefaultRuntime), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		f.Fatal(err)
	}
	oldPath, hadPath := os.LookupEnv("PATH")
	oldRoot := runcRootDefault
	os.Setenv("PATH", bin)
	f.Cleanup(func() {
		runcRootDefault = oldRoot
		if hadPath {
			os.Setenv("PATH", oldPath)
		} else {
			os.Unsetenv("PATH")
		}
	})
}

// The task directory's entries FuzzLoad writes, in the order of its
// arguments; bit i of present says entry i exists, bit i of hostile
// replaces it with its opposite kind: a regular file by a symbolic link
// whose target is the content, a link (work, s) by a regular file.
var fuzzEntries = []string{RuntimeFile, InitPidFile, OptionsFile, ConfigFile, stateFile, AddressFile,
	BootstrapFile, ExitFile, ShimBinaryPathFile, WorkLink, SocketDirLink}

const (
	entRuntime = iota
	entInitPid
	entOptions
	entConfig
	entState
	entAddress
	entBootstrap
	entExit
	entShimBinaryPath
	entWork
	entSocketDir
)

// FuzzLoad writes a whole task directory (and runc's state) from the fuzz
// input, loads it, and checks every property the delete path relies on:
// no panic; no error for a valid namespace and id (an error, and nothing
// created, for an invalid one); nothing created, changed or removed by
// Load; every path the Bundle hands on for removal where it must be
// (WorkDir absolute, clean, ending in io.containerd.runtime.v2.task/<ns>/<id>;
// StateDir == <RuncRoot>/<ns>/<id>); a file replaced by a symbolic link is
// never read; init.pid never becomes runc's state; and RemoveDeadSocket,
// given the Bundle's address and a socket directory inside the fixture,
// removes at most one dead socket, directly in that directory, and nothing
// else.
func FuzzLoad(f *testing.F) {
	setupFuzzEnv(f)
	f.Fuzz(func(t *testing.T, ns, id string, present, hostile uint16,
		runtime, initPid, options, config, state, address, bootstrap, exit, shimBinaryPath []byte,
		work, sockLink string) {
		if ValidateNamespace(ns) != nil || ValidateID(id) != nil {
			fuzzInvalid(t, ns, id)
			return
		}
		ft := newFuzzTree(t, ns, id)
		runcRootDefault = filepath.Join(ft.root, "default-runc")
		contents := [][]byte{runtime, initPid, options, config, state, address, bootstrap, exit, shimBinaryPath,
			[]byte(work), []byte(sockLink)}
		// written[i]: entry i exists as its normal kind (regular file or link).
		written := make([]bool, len(fuzzEntries))
		for i, name := range fuzzEntries {
			if present&(1<<i) == 0 {
				continue
			}
			data := ft.expand(contents[i])
			isLink := i == entWork || i == entSocketDir
			asLink := isLink != (hostile&(1<<i) != 0)
			var paths []string
			if i == entState {
				paths = []string{filepath.Join(ft.root, "runc", ns, id, stateFile), filepath.Join(ft.root, "default-runc", ns, id, stateFile)}
			} else {
				paths = []string{filepath.Join(ft.taskDir, name)}
			}
			for _, p := range paths {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				var err error
				if asLink {
					err = os.Symlink(string(data), p) // fails for "" and NUL: then absent
				} else {
					err = os.WriteFile(p, data, 0o644)
				}
				if err == nil && asLink == isLink {
					written[i] = true
				}
			}
		}
		if present&(1<<11) != 0 {
			if err := os.Mkdir(filepath.Join(ft.taskDir, RootfsDir), 0o755); err != nil {
				t.Fatal(err)
			}
		}

		before := snapshot(t, ft.root)
		b, err := Load(ft.taskDir, ns, id)
		if err != nil {
			t.Fatalf("Load(valid %q/%q) = %v", ns, id, err)
		}
		after := snapshot(t, ft.root)
		if !equalSnapshots(before, after) {
			t.Fatalf("Load changed the fixture:\nbefore %q\nafter  %q", before, after)
		}
		checkBundle(t, ft, b, ns, id, written, contents)
		checkSocketRemoval(t, ft, b, after)
	})
}

// fuzzInvalid: Load refuses an invalid namespace or id, returns no Bundle
// and creates nothing.
func fuzzInvalid(t *testing.T, ns, id string) {
	root := t.TempDir()
	for _, p := range []string{filepath.Join(root, ns, id), filepath.Join(root, id), root} {
		b, err := Load(p, ns, id)
		if err == nil || b != nil {
			t.Fatalf("Load(%q, %q, %q) = %+v, %v; want an error for an invalid namespace or id", p, ns, id, b, err)
		}
	}
	if ents, err := os.ReadDir(root); err != nil || len(ents) != 0 {
		t.Fatalf("Load created %v (%v)", ents, err)
	}
}

func checkBundle(t *testing.T, ft *fuzzTree, b *Bundle, ns, id string, written []bool, contents [][]byte) {
	t.Helper()
	if b.Path != ft.taskDir || b.Namespace != ns || b.ID != id || b.Missing {
		t.Fatalf("Bundle %q %q/%q missing=%v; want %q %q/%q", b.Path, b.Namespace, b.ID, b.Missing, ft.taskDir, ns, id)
	}

	// Where runc's state is removed from.
	if !filepath.IsAbs(b.RuncRoot) || filepath.Clean(b.RuncRoot) != b.RuncRoot {
		t.Errorf("RuncRoot %q is not absolute and clean", b.RuncRoot)
	}
	if b.StateDir != filepath.Join(b.RuncRoot, ns, id) || filepath.Base(b.StateDir) != id || filepath.Base(filepath.Dir(b.StateDir)) != ns {
		t.Errorf("StateDir %q is not <RuncRoot %q>/%s/%s", b.StateDir, b.RuncRoot, ns, id)
	}
	if !written[entOptions] && b.RuncRoot != runcRootDefault {
		t.Errorf("RuncRoot %q without options.json; want the default %q", b.RuncRoot, runcRootDefault)
	}

	// The work directory removed beside the task directory.
	suffix := "/" + TaskStateDirName + "/" + ns + "/" + id
	if b.WorkDir != "" {
		if !filepath.IsAbs(b.WorkDir) || filepath.Clean(b.WorkDir) != b.WorkDir || !strings.HasSuffix(b.WorkDir, suffix) {
			t.Errorf("WorkDir %q is not an absolute clean path ending in %s", b.WorkDir, suffix)
		}
		if !written[entWork] {
			t.Errorf("WorkDir %q without a work link", b.WorkDir)
		}
	}
	if written[entWork] {
		target := string(ft.expand(contents[entWork]))
		want := ""
		if filepath.IsAbs(target) && strings.HasSuffix(filepath.Clean(target), suffix) {
			want = filepath.Clean(target)
		}
		if b.WorkDir != want {
			t.Errorf("work -> %q: WorkDir %q, want %q", target, b.WorkDir, want)
		}
	}

	// The socket directory and address.
	if !filepath.IsAbs(b.SocketDir) || filepath.Clean(b.SocketDir) != b.SocketDir {
		t.Errorf("SocketDir %q is not absolute and clean", b.SocketDir)
	}
	if !written[entSocketDir] && b.SocketDir != DefaultSocketDir {
		t.Errorf("SocketDir %q without an s link; want %s", b.SocketDir, DefaultSocketDir)
	}
	if b.Address != "" {
		if !strings.HasPrefix(b.Address, unixScheme) || len(b.Address) == len(unixScheme) || checkName(b.Address) != nil {
			t.Errorf("Address %q is not unix://PATH of printable UTF-8", b.Address)
		}
		if !written[entAddress] && !written[entBootstrap] {
			t.Errorf("Address %q from neither address nor bootstrap.json", b.Address)
		}
	}
	if written[entBootstrap] && b.Address != "" {
		// bootstrap.json exists: the address is its, never address's.
		var boot Bootstrap
		if err := json.Unmarshal(ft.expand(contents[entBootstrap]), &boot); err != nil || boot.Address != b.Address {
			t.Errorf("Address %q, but bootstrap.json holds %q (%v)", b.Address, boot.Address, err)
		}
	}

	// Each file that is not a regular file (here: a symbolic link to
	// anything) is never read.
	if !written[entInitPid] && b.InitPid != 0 {
		t.Errorf("InitPid %d without a regular init.pid", b.InitPid)
	}
	if !written[entOptions] && b.Options != nil {
		t.Errorf("Options %+v without a regular options.json", b.Options)
	}
	if !written[entConfig] && b.Spec != nil {
		t.Errorf("Spec %+v without a regular config.json", b.Spec)
	}
	if !written[entExit] && b.Exit != nil {
		t.Errorf("Exit %+v without a regular exit.json", b.Exit)
	}
	if !written[entShimBinaryPath] && b.ShimBinaryPath != "" {
		t.Errorf("ShimBinaryPath %q without a regular shim-binary-path", b.ShimBinaryPath)
	}

	// init.pid: exactly a decimal pid in range, and only ever a claim.
	if written[entInitPid] {
		want := 0
		if n, err := strconv.Atoi(string(contents[entInitPid])); err == nil && n > 0 && n <= math.MaxInt32 {
			want = n
		}
		if b.InitPid != want {
			t.Errorf("init.pid %q: InitPid %d, want %d", contents[entInitPid], b.InitPid, want)
		}
	}
	if b.InitPid < 0 || b.InitPid > math.MaxInt32 {
		t.Errorf("InitPid %d out of range", b.InitPid)
	}
	if b.State != nil {
		ownState := b.StateDir == filepath.Join(ft.root, "runc", ns, id) || b.StateDir == filepath.Join(ft.root, "default-runc", ns, id)
		if ownState && !written[entState] {
			t.Errorf("State %+v without a state.json (init.pid must never stand in for it)", b.State)
		}
		if b.State.ID != id || b.State.Config.Cgroups == nil {
			t.Errorf("State of id %q, cgroups %v; want id %q and a cgroup configuration", b.State.ID, b.State.Config.Cgroups, id)
		}
	}

	// The rest.
	if b.Runtime == "" || checkName(b.Runtime) != nil {
		t.Errorf("Runtime %q is not a name", b.Runtime)
	}
	if b.ShimBinaryPath != "" && (!filepath.IsAbs(b.ShimBinaryPath) || checkName(b.ShimBinaryPath) != nil) {
		t.Errorf("ShimBinaryPath %q is not an absolute path", b.ShimBinaryPath)
	}
	if e := b.Exit; e != nil && (e.Pid <= 0 || e.Status < 0 || e.Status > math.MaxUint32 || e.Timestamp.IsZero()) {
		t.Errorf("Exit %+v is not a valid exit", e)
	}
	whats := map[string]bool{whatTaskDir: true, whatState: true, whatBinary: true}
	for _, name := range fuzzEntries {
		whats[name] = true
	}
	for _, p := range b.Problems {
		if !whats[p.What] || p.Err == nil || p.Error() == "" {
			t.Errorf("malformed problem %#v", p)
		}
	}
}

// checkSocketRemoval hands the Bundle's address to RemoveDeadSocket with a
// socket directory inside the fixture (the Bundle's own SocketDir when the
// s link named one there), before being the fixture as Load left it, and
// checks that at most one entry went away: a
// dead socket directly in that directory, named by the address.
func checkSocketRemoval(t *testing.T, ft *fuzzTree, b *Bundle, before map[string]string) {
	t.Helper()
	if b.Address == "" {
		return
	}
	dir := ft.sockDir
	if ft.inside(b.SocketDir) {
		dir = b.SocketDir
	}
	removed, err := RemoveDeadSocket(b.Address, dir)
	after := snapshot(t, ft.root)
	checkRemovedOnly(t, ft, b.Address, dir, before, after, removed, err)
}

// checkRemovedOnly asserts that the only difference between before and
// after is at most one removed socket that RemoveDeadSocket(address, dir)
// may remove: a dead one, directly in dir (links resolved), named by the
// address, and that removed says so.
func checkRemovedOnly(t *testing.T, ft *fuzzTree, address, dir string, before, after map[string]string, removed bool, err error) {
	t.Helper()
	var gone []string
	for k, v := range before {
		w, ok := after[k]
		switch {
		case !ok:
			gone = append(gone, k)
		case w != v:
			t.Errorf("RemoveDeadSocket(%q, %q) changed %s: %q -> %q", address, dir, k, v, w)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("RemoveDeadSocket(%q, %q) created %s", address, dir, k)
		}
	}
	if removed != (len(gone) == 1) || len(gone) > 1 {
		t.Fatalf("RemoveDeadSocket(%q, %q) = %v, %v; removed %v", address, dir, removed, err, gone)
	}
	if removed && err != nil {
		t.Errorf("RemoveDeadSocket(%q, %q) removed a socket and returned %v", address, dir, err)
	}
	if !exists(ft.live) {
		t.Fatalf("RemoveDeadSocket(%q, %q) removed the live socket", address, dir)
	}
	if len(gone) == 0 {
		return
	}
	p := filepath.Join(ft.root, gone[0])
	if !strings.HasPrefix(before[gone[0]], "<S") {
		t.Errorf("RemoveDeadSocket(%q, %q) removed %s, which was not a socket (%q)", address, dir, p, before[gone[0]])
	}
	realDir, err1 := filepath.EvalSymlinks(dir)
	realParent, err2 := filepath.EvalSymlinks(filepath.Dir(p))
	if err1 != nil || err2 != nil || realDir != realParent {
		t.Errorf("RemoveDeadSocket(%q, %q) removed %s, outside the socket directory (%s; %v %v)", address, dir, p, realDir, err1, err2)
	}
	if named := filepath.Clean(strings.TrimPrefix(address, unixScheme)); filepath.Base(named) != filepath.Base(p) {
		t.Errorf("RemoveDeadSocket(%q, %q) removed %s, not the socket the address names", address, dir, p)
	}
}

// FuzzRemoveDeadSocket hands RemoveDeadSocket any address and any socket
// directory inside the fixture, links resolved (a socket directory outside
// it would let the fuzzer unlink the host's dead sockets: such inputs are
// skipped), and
// checks that it removes at most one dead socket, directly in that
// directory, and nothing else: never the live socket, a regular file, a
// link or its target, a directory.
func FuzzRemoveDeadSocket(f *testing.F) {
	f.Add("unix://"+fuzzToken+"/s/"+fuzzShimSocket, fuzzToken+"/s")
	f.Add("unix://"+fuzzToken+"/s-link/"+fuzzShimSocket, fuzzToken+"/s-link")
	f.Add("unix://"+fuzzToken+"/outside/"+fuzzShimSocket, fuzzToken+"/s")
	f.Fuzz(func(t *testing.T, address, socketDir string) {
		ft := newFuzzTree(t, "default", "ctr")
		address = string(ft.expand([]byte(address)))
		socketDir = string(ft.expand([]byte(socketDir)))
		if !ft.inside(socketDir) {
			return
		}
		if fi, err := os.Lstat(filepath.Join(ft.root, "s-link")); err != nil || fi.Mode().Type() != os.ModeSymlink {
			t.Fatal("fixture: s-link is not a link")
		}
		before := snapshot(t, ft.root)
		removed, err := RemoveDeadSocket(address, socketDir)
		after := snapshot(t, ft.root)
		checkRemovedOnly(t, ft, address, socketDir, before, after, removed, err)
		if err != nil && (err.Error() == "" || strings.ToLower(err.Error()[:1]) != err.Error()[:1]) {
			t.Errorf("error %q is not lowercase", err)
		}
		if removed && errors.Is(err, os.ErrNotExist) {
			t.Errorf("removed and not-exist: %v", err)
		}
	})
}

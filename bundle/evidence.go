package bundle

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotTaskDir is wrapped by CheckTaskDir's error: there is no positive
// evidence that the directory is a runc v2 task directory, and nothing in
// it may be removed on the delete path's say-so.
var ErrNotTaskDir = errors.New("not a runc v2 task directory")

// containerdRootMarker is a directory only containerd's `root` holds (its
// metadata store), never its `state`: a path of the task layout under it is
// a work directory, not a task directory.
const containerdRootMarker = "io.containerd.metadata.v1.bolt"

// maxTaskDirEntries bounds the names CheckTaskDir reads of a directory:
// containerd and the runc shim write about fifteen, plus one pid file per
// running exec.
const maxTaskDirEntries = 4096

// Evidence is why CheckTaskDir takes a directory for a runc v2 task
// directory.
type Evidence struct {
	// Path is the directory, absolute and cleaned.
	Path string
	// Layout: Path is <state>/io.containerd.runtime.v2.task/<ns>/<id> and
	// <state> is not containerd's root. Its content is then not examined:
	// OCI hooks may write there.
	Layout bool
	// Markers are what the content holds that only containerd and its
	// runc shim write there (when Layout is false): the work link to
	// <root>/io.containerd.runtime.v2.task/<ns>/<id>, address, or
	// bootstrap.json; or the guard an earlier delete left (Guard).
	Markers []string
	// Missing: the directory does not exist: there is nothing in it to
	// remove, and what a delete does then is keyed by namespace and id
	// alone (runc's state under its default root, the cgroups it names).
	Missing bool
}

// String says the evidence in words, for a report.
func (e Evidence) String() string {
	switch {
	case e.Missing:
		return "gone already"
	case e.Layout:
		return "containerd's task layout (<state>/" + TaskStateDirName + "/<namespace>/<id>)"
	}
	return "holds only what containerd and the runc shim write, with " + strings.Join(e.Markers, ", ")
}

// entryKind is the type a name in a task directory must have.
type entryKind int

const (
	kindRegular entryKind = iota
	kindDir
	kindSymlink
	kindFIFO
)

func (k entryKind) String() string {
	return [...]string{"a regular file", "a directory", "a symbolic link", "a FIFO"}[k]
}

// taskDirNames are the names containerd (1.6 to 2.x: runtime/v2 bundle.go,
// binary.go, shim_manager.go, shim_unix.go) and its runc shim
// (containerd-shim-runc-v2: manager, runc/container.go, process/) write
// in a task directory, with their types. Besides these: <exec id>.pid (a
// running exec's pid file), a dot and any of the regular names or an
// exec's pid file (temporary files renamed into place by runc's
// --pid-file and 1.6's shim), and names of digits only (the temporary
// files of containerd's atomicfile).
var taskDirNames = map[string]entryKind{
	ConfigFile:         kindRegular,
	OptionsFile:        kindRegular,
	RuntimeFile:        kindRegular,
	InitPidFile:        kindRegular,
	AddressFile:        kindRegular,
	BootstrapFile:      kindRegular,
	ShimBinaryPathFile: kindRegular,
	ExitFile:           kindRegular,
	SandboxFile:        kindRegular,
	"log.json":         kindRegular, // runc's --log
	"shim.pid":         kindRegular, // the v1 runc shim's pid
	"criu-dump.log":    kindRegular, // a failed checkpoint's log
	RootfsDir:          kindDir,
	WorkLink:           kindSymlink,
	SocketDirLink:      kindSymlink,
	"log":              kindFIFO, // the shim's log, a FIFO containerd reads
}

// expectedKind is the type name must have in a task directory; ok is false
// when containerd and the runc shim never write that name.
func expectedKind(name string) (k entryKind, ok bool) {
	if k, ok := taskDirNames[name]; ok {
		return k, true
	}
	base := strings.TrimPrefix(name, ".")
	if base != name {
		if k, ok := taskDirNames[base]; ok && k == kindRegular {
			return kindRegular, true
		}
	}
	if exec, ok := strings.CutSuffix(base, ".pid"); ok && ValidateID(exec) == nil {
		return kindRegular, true
	}
	if name != "" && strings.Trim(name, "0123456789") == "" {
		return kindRegular, true
	}
	return 0, false
}

func kindOf(mode uint32) (entryKind, bool) {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return kindRegular, true
	case unix.S_IFDIR:
		return kindDir, true
	case unix.S_IFLNK:
		return kindSymlink, true
	case unix.S_IFIFO:
		return kindFIFO, true
	}
	return 0, false
}

// IsTaskLayout reports whether path (made absolute and cleaned) is
// <state>/io.containerd.runtime.v2.task/<namespace>/<id> where <state> is
// not containerd's root (which holds the tasks' work directories under the
// same names: a root is told by its metadata directory,
// io.containerd.metadata.v1.bolt). It reads nothing but that one name.
func IsTaskLayout(path, namespace, id string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	nsDir := filepath.Dir(abs)
	plugin := filepath.Dir(nsDir)
	if filepath.Base(abs) != id || filepath.Base(nsDir) != namespace || filepath.Base(plugin) != TaskStateDirName {
		return false
	}
	state := filepath.Dir(plugin)
	if _, err := os.Lstat(filepath.Join(state, containerdRootMarker)); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return true
}

// CheckTaskDir looks for positive evidence that path is the runc v2 task
// directory of namespace/id, and returns it, or an error wrapping
// ErrNotTaskDir that says why there is none. It creates, changes and
// removes nothing, and follows no symlink.
//
// The evidence is one of:
//   - the layout (IsTaskLayout): path is
//     <state>/io.containerd.runtime.v2.task/<ns>/<id>, which is where every
//     containerd (1.6 to 2.x) makes task directories and nowhere else. Its
//     content is not examined (OCI hooks may write in a bundle);
//   - the content: path is a directory (not a symlink) that holds only
//     names containerd and the runc shim write there, each of the type
//     they give it (rootfs a directory, work and s symbolic links, log a
//     FIFO, the rest regular files: see taskDirNames), and at least one
//     marker only they write: the work link pointing at
//     <root>/io.containerd.runtime.v2.task/<ns>/<id>, address holding a
//     unix:// address, or bootstrap.json holding a JSON object with an
//     address; or the guard (GuardFile in rootfs) an earlier delete left
//     when it stopped half-way (its removal may have taken the others). config.json is allowed but is not a marker: config.json and
//     rootfs/ alone are what an operator's own OCI bundle holds.
//
// A path that does not exist (or whose parent is not a directory) is
// Missing, wherever it is: nothing in it can be removed, and a second
// delete finishes what the first left outside it (runc's state, cgroups).
//
// Edge cases: an invalid namespace or id is an error (wrapping ErrInvalid
// and ErrNotTaskDir); a path whose base name is not id, a symlink, a path
// that is not a directory, and a directory with more than
// maxTaskDirEntries names are refused.
func CheckTaskDir(path, namespace, id string) (Evidence, error) {
	fail := func(format string, args ...any) (Evidence, error) {
		return Evidence{}, fmt.Errorf("%w: "+format, append([]any{ErrNotTaskDir}, args...)...)
	}
	if err := ValidateNamespace(namespace); err != nil {
		return Evidence{}, fmt.Errorf("%w: %w", ErrNotTaskDir, err)
	}
	if err := ValidateID(id); err != nil {
		return Evidence{}, fmt.Errorf("%w: %w", ErrNotTaskDir, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fail("%s: %v", path, err)
	}
	if filepath.Base(abs) != id {
		return fail("%s: its name is not the task id %q", abs, id)
	}
	ev := Evidence{Path: abs, Layout: IsTaskLayout(abs, namespace, id)}
	fi, err := os.Lstat(abs)
	switch {
	case err != nil && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)):
		ev.Missing = true
		return ev, nil
	case err != nil:
		return fail("%s: %v", abs, err)
	case fi.Mode().Type() == fs.ModeSymlink:
		return fail("%s is a symbolic link", abs)
	case !fi.IsDir():
		return fail("%s is not a directory (%s)", abs, fi.Mode().Type())
	case ev.Layout:
		return ev, nil
	}
	markers, err := contentMarkers(abs, namespace, id)
	if err != nil {
		return Evidence{}, fmt.Errorf("%w: %s is not <state>/%s/<namespace>/<id>, and %w", ErrNotTaskDir, abs, TaskStateDirName, err)
	}
	ev.Markers = markers
	return ev, nil
}

// contentMarkers checks that the directory at path holds only what
// containerd and the runc shim write in a task directory, and returns the
// markers it holds (at least one, else an error).
func contentMarkers(path, namespace, id string) ([]string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	dir := os.NewFile(uintptr(fd), path)
	defer dir.Close()
	names, err := dir.Readdirnames(maxTaskDirEntries + 1)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	if len(names) > maxTaskDirEntries {
		return nil, fmt.Errorf("it holds more than %d names", maxTaskDirEntries)
	}
	var markers []string
	for _, name := range names {
		want, ok := expectedKind(name)
		if !ok {
			return nil, fmt.Errorf("it holds %.100q, which neither containerd nor the runc shim writes there", name)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed meanwhile
			}
			return nil, fmt.Errorf("cannot stat %s: %w", name, err)
		}
		if got, ok := kindOf(st.Mode); !ok || got != want {
			return nil, fmt.Errorf("its %s is not %s", name, want)
		}
		switch name {
		case WorkLink:
			target, err := readlinkat(fd, name)
			suffix := "/" + TaskStateDirName + "/" + namespace + "/" + id
			if err == nil && filepath.IsAbs(target) && strings.HasSuffix(filepath.Clean(target), suffix) {
				markers = append(markers, "the work link to "+filepath.Clean(target))
			}
		case AddressFile:
			data, err := readRegular(filepath.Join(path, name), maxSmallFile)
			if err == nil {
				if _, err := checkAddress(strings.TrimSpace(string(data))); err == nil {
					markers = append(markers, AddressFile)
				}
			}
		case BootstrapFile:
			var boot Bootstrap
			if err := readJSONObject(filepath.Join(path, name), maxSmallFile, &boot); err == nil && boot.Address != "" {
				markers = append(markers, BootstrapFile)
			}
		case RootfsDir:
			var gst unix.Stat_t
			if err := unix.Fstatat(fd, RootfsDir+"/"+GuardFile, &gst, unix.AT_SYMLINK_NOFOLLOW); err == nil && gst.Mode&unix.S_IFMT == unix.S_IFREG {
				markers = append(markers, "the guard an earlier delete left in rootfs")
			}
		}
	}
	if len(markers) == 0 {
		return nil, fmt.Errorf("it holds neither the work link to <root>/%s/<namespace>/<id> nor address nor bootstrap.json, which only containerd and its shim write (config.json and rootfs alone are any OCI bundle)", TaskStateDirName)
	}
	return markers, nil
}

// readlinkat reads the symbolic link name in the directory dirfd.
func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

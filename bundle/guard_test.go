package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// containerd2BundleDelete is containerd 2.x's bundle.Delete
// (core/runtime/v2/bundle.go) up to the point where it would cross a
// mount: UnmountRecursive(rootfs), os.Remove(rootfs), then the rename and
// RemoveAll, which are replaced by an error saying they would have run.
func containerd2BundleDelete(path string) error {
	rootfs := filepath.Join(path, RootfsDir)
	if _, err := UnmountAll(rootfs, nil); err != nil {
		return err
	}
	if err := os.Remove(rootfs); err != nil && !os.IsNotExist(err) {
		return err
	}
	return errors.New("containerd would now rename and RemoveAll the task directory")
}

func TestGuardStopsContainerdsRemovalBeforeAMount(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name   string
		rootfs string // "mount": rootfs is a mount point itself; "dir": a plain directory; "none": missing; "symlink": a link to a host directory; "file": a regular file
	}{{"rootfs is a mount point", "mount"}, {"rootfs is a directory", "dir"}, {"rootfs is missing", "none"},
		{"rootfs is a symlink to a host directory", "symlink"}, {"rootfs is a regular file", "file"}} {
		t.Run(tc.name, func(t *testing.T) {
			task := filepath.Join(t.TempDir(), "task")
			data := filepath.Join(t.TempDir(), "data")
			writeFile(t, filepath.Join(data, "precious"), []byte("user data"))
			mkdir(t, filepath.Join(task, "extra"))
			// The mount that "would not go": a bind mount of user data
			// beside rootfs.
			bindMount(t, data, filepath.Join(task, "extra"))
			var rootfsData string
			switch tc.rootfs {
			case "mount":
				rootfsData = t.TempDir()
				writeFile(t, filepath.Join(rootfsData, "bin", "sh"), []byte("x"))
				mkdir(t, filepath.Join(task, RootfsDir))
				bindMount(t, rootfsData, filepath.Join(task, RootfsDir))
			case "dir":
				if err := os.MkdirAll(filepath.Join(task, RootfsDir), 0o755); err != nil {
					t.Fatal(err)
				}
			case "symlink":
				rootfsData = t.TempDir()
				writeFile(t, filepath.Join(rootfsData, "host-file"), []byte("host"))
				if err := os.Symlink(rootfsData, filepath.Join(task, RootfsDir)); err != nil {
					t.Fatal(err)
				}
			case "file":
				writeFile(t, filepath.Join(task, RootfsDir), []byte("not a directory"))
			}

			if err := Guard(task); err != nil {
				t.Fatal(err)
			}
			if rootfsData != "" && exists(filepath.Join(rootfsData, GuardFile)) {
				t.Fatal("the guard was written into the filesystem mounted on rootfs, or the symlink's target")
			}
			if tc.rootfs == "symlink" && !exists(filepath.Join(rootfsData, "host-file")) {
				t.Fatal("the symlink's target lost its content")
			}
			err := containerd2BundleDelete(task)
			if err == nil || !errors.Is(err, unix.ENOTEMPTY) {
				t.Fatalf("containerd's os.Remove(rootfs) was not stopped: %v", err)
			}
			if !exists(filepath.Join(data, "precious")) || !exists(filepath.Join(task, "extra", "precious")) {
				t.Fatal("user data behind the mount is gone")
			}
			// Our own delete, once the mount is gone, removes the guard
			// with the rest.
			if _, err := UnmountAll(task, nil); err != nil {
				t.Fatal(err)
			}
			if err := RemoveAll(task, nil); err != nil {
				t.Fatal(err)
			}
			if exists(task) || !exists(filepath.Join(data, "precious")) {
				t.Fatalf("task left %v, or data lost", exists(task))
			}
		})
	}
}

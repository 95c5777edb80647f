package bundle

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// requireRoot fails the test loudly unless it runs as root: these tests use
// real mounts, and a skip would be counted as a pass.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (real mounts, sockets and runc state); euid is %d", os.Geteuid())
	}
}

// mustMount mounts and registers a detaching unmount in t.Cleanup, which
// runs before the cleanup of any t.TempDir made earlier.
func mustMount(t *testing.T, src, dst, fstype string, flags uintptr) {
	t.Helper()
	if err := unix.Mount(src, dst, fstype, flags, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() {
		err := unix.Unmount(dst, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("cleanup: unmount %s: %v", dst, err)
		}
	})
}

func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	mustMount(t, src, dst, "", unix.MS_BIND)
}

func tmpfsMount(t *testing.T, dst string) {
	t.Helper()
	mustMount(t, "bundletest", dst, "tmpfs", 0)
}

// mountpointsBelow lists the mount points at or below p, in mountinfo order.
func mountpointsBelow(t *testing.T, p string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(p))
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	var mps []string
	for _, m := range ms {
		mps = append(mps, m.Mountpoint)
	}
	return mps
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot maps every path below root (relative) to its content, "-> target"
// for a symlink, or "<type>" for a directory or special file.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "-> " + target
		case d.IsDir():
			m[rel] = "<dir>"
		case !d.Type().IsRegular():
			m[rel] = "<" + d.Type().String() + ">"
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return m
}

func equalSnapshots(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

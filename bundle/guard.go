package bundle

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// GuardFile is the file Guard leaves in the task directory's rootfs.
const GuardFile = ".containerd-shim-runc-v2-robust-keep"

const guardText = "containerd-shim-runc-v2-robust left this task directory in place: a mount under it,\n" +
	"or a process of the container, would not go. This file keeps containerd's own removal\n" +
	"(bundle.Delete: os.Remove(rootfs), then RemoveAll) from crossing that mount. Run the\n" +
	"shim's delete again once the mount is gone; it removes this file with the rest.\n"

// Guard leaves the task directory at path so that containerd's own removal
// of a bundle stops before it could cross a mount left under it. containerd
// 2.x removes the bundle at start-up even after a failed delete
// (core/runtime/v2 bundle.Delete): it unmounts rootfs recursively, then
// os.Remove(rootfs), which is not recursive, and only then renames and
// RemoveAll's the directory. Guard makes that os.Remove fail: it puts
// GuardFile in rootfs, creating rootfs when it is missing.
//
// The file is written in rootfs as it lies on the task directory's own
// filesystem, never into a filesystem mounted on rootfs (a container's
// overlay, or a user's bind mount): the task directory is cloned as a
// detached mount without its submounts (open_tree(2) OPEN_TREE_CLONE), so
// that rootfs there is always the underlying directory, also when a mount
// on rootfs itself would not go (containerd's unmount of it then fails, or
// empties it: either way the guard stays). Nothing is attached anywhere
// and nothing propagates. A rootfs that is not a directory (a symlink, a
// file: os.Remove would take it, and the RemoveAll after it cross the
// mount) is replaced, in the clone, by a directory holding the guard; the
// target of a symlink is never touched. A rootfs that cannot be replaced
// (a file bind-mounted on) is an error: the guard could not be placed.
func Guard(path string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("guard %s: clone: %w", path, err)
	}
	defer unix.Close(tree)
	var st unix.Stat_t
	switch err := unix.Fstatat(tree, RootfsDir, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		// A symlink, a file: containerd's os.Remove would take it and go
		// on. unlinkat without AT_REMOVEDIR never removes a directory, and
		// fails (EBUSY) on a mount point of our namespace.
		if err := unix.Unlinkat(tree, RootfsDir, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("guard %s: rootfs is not a directory and cannot be replaced by one: %w", path, err)
		}
	case err != nil && !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("guard %s: stat rootfs: %w", path, err)
	}
	if err := unix.Mkdirat(tree, RootfsDir, 0o711); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("guard %s: mkdir rootfs: %w", path, err)
	}
	dir, err := unix.Openat(tree, RootfsDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("guard %s: open rootfs: %w", path, err)
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, GuardFile, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("guard %s: create %s: %w", path, GuardFile, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(guardText)); err != nil {
		return fmt.Errorf("guard %s: write %s: %w", path, GuardFile, err)
	}
	return nil
}

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
// file) is left as it is: os.Remove on it would not cross a mount, so the
// error says the guard could not be placed.
func Guard(path string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return fmt.Errorf("guard %s: clone: %w", path, err)
	}
	defer unix.Close(tree)
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

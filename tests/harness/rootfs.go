package harness

import (
	"fmt"
	"os"
	"path/filepath"
)

// BusyboxApplets are linked to busybox in every rootfs BuildRootfs makes.
var BusyboxApplets = []string{"sh", "sleep", "cat", "ls", "echo", "ps", "true", "kill", "mount"}

// BuildRootfs makes a minimal root filesystem at dir: a copy of the static
// busybox binary at bin/busybox, links for BusyboxApplets, and the empty
// directories runc mounts onto. dir must not exist or be empty.
func BuildRootfs(dir, busybox string) error {
	for _, sub := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "run", "mnt", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := CopyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("copy busybox: %w", err)
	}
	for _, a := range BusyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":    "root:x:0:\n",
		"etc/hostname": "e2e\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

package node

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// DefaultCache is where image.sh keeps built images, outside the tree.
const DefaultCache = "/var/cache/robust-node"

// Image is a built node image: the ext4 disk, the kernel and initrd taken
// from it, and what image.sh recorded of it (kernel, package versions).
type Image struct {
	Dir      string
	Disk     string
	Kernel   string
	Initrd   string
	Versions map[string]string
}

// recipe is image.sh beside this file.
func recipe() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "image.sh")
}

// BuildImage runs image.sh (cache: ROBUST_NODE_CACHE or DefaultCache),
// which builds the image when its recipe's hash has no image yet (minutes:
// debootstrap from the mirror apt uses) and otherwise returns at once. The
// script's progress goes to log.
func BuildImage(ctx context.Context, log *os.File) (*Image, error) {
	cache := os.Getenv("ROBUST_NODE_CACHE")
	if cache == "" {
		cache = DefaultCache
	}
	cmd := exec.CommandContext(ctx, recipe(), cache)
	cmd.Stderr = log
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("build the node image (%s): %w", recipe(), err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	img, err := LoadImage(lines[len(lines)-1])
	if err != nil {
		return nil, err
	}
	pruneImages(cache, img.Dir, log)
	return img, nil
}

// pruneImages removes the images of other recipes from the cache (a
// recipe's image is 1 GB): only the current one is ever booted.
func pruneImages(cache, keep string, log *os.File) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "*", "done"))
	for _, done := range dirs {
		if dir := filepath.Dir(done); dir != keep {
			fmt.Fprintf(log, "node image: removing %s (an older recipe)\n", dir)
			_ = os.RemoveAll(dir)
		}
	}
}

// LoadImage reads a built image directory.
func LoadImage(dir string) (*Image, error) {
	img := &Image{
		Dir:      dir,
		Disk:     filepath.Join(dir, "node.img"),
		Kernel:   filepath.Join(dir, "vmlinuz"),
		Initrd:   filepath.Join(dir, "initrd.img"),
		Versions: map[string]string{},
	}
	for _, p := range []string{img.Disk, img.Kernel, img.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("node image %s: %w", dir, err)
		}
	}
	f, err := os.Open(filepath.Join(dir, "versions"))
	if err != nil {
		return nil, fmt.Errorf("node image %s: %w", dir, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			img.Versions[k] = v
		}
	}
	return img, sc.Err()
}

package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// hostDir makes a directory outside the bundle whose files must survive
// every RemoveAll below.
func hostDir(t *testing.T, tag string) string {
	t.Helper()
	d := t.TempDir()
	writeFile(t, filepath.Join(d, "f1"), []byte(tag+" one"))
	writeFile(t, filepath.Join(d, "sub", "f2"), []byte(tag+" two"))
	writeFile(t, filepath.Join(d, "sub", "deeper", "f3"), []byte(tag+" three"))
	writeFile(t, filepath.Join(d, "hostfile"), []byte(tag+" hostfile"))
	return d
}

// mountTree is a bundle-like tree with every kind of mount the delete path
// meets, over host directories that must survive.
type mountTree struct {
	bundle       string
	host, host2  string
	hostSnap     map[string]string
	host2Snap    map[string]string
	mountpoints  []string // the mount points directly reachable by a walk
	nestedInner  string   // a mount below the tmpfs mount m1
	stacked      string   // the mount point with two mounts
	plainFiles   []string // must be removed by RemoveAll
	plainParents []string // must stay (they hold a mount point)
}

func newMountTree(t *testing.T) *mountTree {
	t.Helper()
	requireRoot(t)
	tr := &mountTree{host: hostDir(t, "host"), host2: hostDir(t, "host2")}
	tr.bundle = filepath.Join(t.TempDir(), "k8s.io", "ctr-1")
	b := tr.bundle
	for _, d := range []string{"rootfs", "m1", "deep/a/rootfs2", "plain/x/y"} {
		if err := os.MkdirAll(filepath.Join(b, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(b, ConfigFile), []byte("placeholder"))
	writeFile(t, filepath.Join(b, "plain/x/y/file"), []byte("plain"))
	writeFile(t, filepath.Join(b, "deep/a/sibling"), []byte("sibling"))
	if err := os.Symlink(tr.host, filepath.Join(b, "link-to-host")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(tr.host, "f1"), filepath.Join(b, "plain/link-to-f1")); err != nil {
		t.Fatal(err)
	}

	// rootfs: a same-filesystem bind mount (same st_dev), with a second
	// bind mount stacked on it.
	bindMount(t, tr.host, filepath.Join(b, "rootfs"))
	bindMount(t, tr.host2, filepath.Join(b, "rootfs"))
	// m1: a tmpfs (another st_dev) with a bind mount nested below it.
	tmpfsMount(t, filepath.Join(b, "m1"))
	if err := os.MkdirAll(filepath.Join(b, "m1/inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b, "m1/tmpfs-file"), []byte("on tmpfs"))
	bindMount(t, tr.host, filepath.Join(b, "m1/inner"))
	// config.json: a file bind mount.
	bindMount(t, filepath.Join(tr.host, "hostfile"), filepath.Join(b, ConfigFile))
	// deep/a/rootfs2: a bind mount below plain directories.
	bindMount(t, tr.host, filepath.Join(b, "deep/a/rootfs2"))

	tr.stacked = filepath.Join(b, "rootfs")
	tr.nestedInner = filepath.Join(b, "m1/inner")
	tr.mountpoints = []string{
		filepath.Join(b, "rootfs"), filepath.Join(b, "m1"),
		filepath.Join(b, ConfigFile), filepath.Join(b, "deep/a/rootfs2"),
	}
	tr.plainFiles = []string{
		filepath.Join(b, "plain"), filepath.Join(b, "link-to-host"), filepath.Join(b, "deep/a/sibling"),
	}
	tr.plainParents = []string{b, filepath.Join(b, "deep"), filepath.Join(b, "deep/a")}
	tr.hostSnap = snapshot(t, tr.host)
	tr.host2Snap = snapshot(t, tr.host2)
	return tr
}

func (tr *mountTree) checkHosts(t *testing.T) {
	t.Helper()
	if got := snapshot(t, tr.host); !equalSnapshots(got, tr.hostSnap) {
		t.Errorf("host dir changed:\nbefore %v\nafter  %v", tr.hostSnap, got)
	}
	if got := snapshot(t, tr.host2); !equalSnapshots(got, tr.host2Snap) {
		t.Errorf("host2 dir changed:\nbefore %v\nafter  %v", tr.host2Snap, got)
	}
}

func TestRemoveAllRefusesMountsThenUnmountAll(t *testing.T) {
	tr := newMountTree(t)
	b := tr.bundle
	mountsBefore := mountpointsBelow(t, b)
	if len(mountsBefore) != 6 {
		t.Fatalf("test setup: mounts below %s = %v, want 6", b, mountsBefore)
	}

	err := RemoveAll(b, nil)
	if err == nil {
		t.Fatal("RemoveAll crossed or removed mount points: no error")
	}
	if !errors.Is(err, unix.EBUSY) {
		t.Errorf("error %v does not wrap EBUSY", err)
	}
	for _, mp := range tr.mountpoints {
		if !strings.Contains(err.Error(), mp+" is a mount point") {
			t.Errorf("error does not name mount point %s: %v", mp, err)
		}
	}
	if strings.Contains(err.Error(), tr.nestedInner) {
		t.Errorf("RemoveAll walked into the tmpfs mount m1: %v", err)
	}
	t.Logf("RemoveAll: %v", err)
	tr.checkHosts(t)
	if got := mountpointsBelow(t, b); !slices.Equal(got, mountsBefore) {
		t.Errorf("mounts changed: %v, want %v", got, mountsBefore)
	}
	if data, err := os.ReadFile(filepath.Join(b, "m1/tmpfs-file")); err != nil || string(data) != "on tmpfs" {
		t.Errorf("tmpfs content removed: %q, %v", data, err)
	}
	for _, p := range tr.plainFiles {
		if exists(p) {
			t.Errorf("%s not removed", p)
		}
	}
	for _, p := range append(tr.plainParents, tr.mountpoints...) {
		if !exists(p) {
			t.Errorf("%s removed", p)
		}
	}

	unmounted, err := UnmountAll(b, nil)
	if err != nil {
		t.Fatalf("UnmountAll: %v", err)
	}
	if !slices.Equal(sorted(unmounted), sorted(mountsBefore)) {
		t.Errorf("unmounted %v, want %v", unmounted, mountsBefore)
	}
	inner, outer := slices.Index(unmounted, tr.nestedInner), slices.Index(unmounted, filepath.Join(b, "m1"))
	if inner < 0 || outer < 0 || inner > outer {
		t.Errorf("unmount order %v: %s must come before %s", unmounted, tr.nestedInner, filepath.Join(b, "m1"))
	}
	for i := 1; i < len(unmounted); i++ {
		if strings.Count(unmounted[i], "/") > strings.Count(unmounted[i-1], "/") {
			t.Errorf("unmount order %v is not deepest first", unmounted)
		}
	}
	if left := mountpointsBelow(t, b); len(left) != 0 {
		t.Fatalf("still mounted after UnmountAll: %v", left)
	}
	tr.checkHosts(t)

	if err := RemoveAll(b, nil); err != nil {
		t.Fatalf("RemoveAll after UnmountAll: %v", err)
	}
	if exists(b) {
		t.Errorf("%s still exists", b)
	}
	tr.checkHosts(t)

	// Both are idempotent.
	if um, err := UnmountAll(b, nil); err != nil || len(um) != 0 {
		t.Errorf("second UnmountAll = %v, %v", um, err)
	}
	if err := RemoveAll(b, nil); err != nil {
		t.Errorf("second RemoveAll: %v", err)
	}
}

// TestRemoveAllEachDetector proves each mount point check alone keeps
// RemoveAll out of the mounts it is meant to catch.
func TestRemoveAllEachDetector(t *testing.T) {
	requireRoot(t)
	if fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH}); err != nil {
		t.Fatalf("openat2 is not usable on this kernel (%v): the RESOLVE_NO_XDEV check cannot be tested", err)
	} else {
		unix.Close(fd)
	}
	kinds := []struct {
		name  string
		mount func(t *testing.T, host, mp string) // mp does not exist yet
	}{
		{"same-fs bind dir", func(t *testing.T, host, mp string) {
			mkdir(t, mp)
			bindMount(t, host, mp)
		}},
		{"tmpfs dir", func(t *testing.T, host, mp string) {
			mkdir(t, mp)
			tmpfsMount(t, mp)
			writeFile(t, filepath.Join(mp, "on-tmpfs"), []byte("x"))
		}},
		{"file bind", func(t *testing.T, host, mp string) {
			writeFile(t, mp, []byte("placeholder"))
			bindMount(t, filepath.Join(host, "hostfile"), mp)
		}},
	}
	dets := []struct {
		name string
		use  detectors
		// catches lists the kinds this check alone must catch; for the
		// others RemoveAll would walk into the mount, so they are not run.
		catches []string
	}{
		{"mountinfo", detectors{mountinfo: true}, []string{"same-fs bind dir", "tmpfs dir", "file bind"}},
		{"openat2", detectors{openat2: true}, []string{"same-fs bind dir", "tmpfs dir", "file bind"}},
		// st_dev alone misses a same-filesystem bind mount (the reason for
		// the other two); a file mount is still refused by unlink's EBUSY.
		{"st_dev", detectors{dev: true}, []string{"tmpfs dir", "file bind"}},
	}
	for _, d := range dets {
		for _, k := range kinds {
			if !slices.Contains(d.catches, k.name) {
				continue
			}
			t.Run(d.name+"/"+k.name, func(t *testing.T) {
				host := hostDir(t, "host")
				snap := snapshot(t, host)
				b := filepath.Join(t.TempDir(), "ctr")
				mp := filepath.Join(b, "sub", "mnt")
				mkdir(t, filepath.Dir(mp))
				k.mount(t, host, mp)
				writeFile(t, filepath.Join(b, "sub", "plain"), []byte("plain"))

				err := removeAll(b, nil, d.use)
				t.Logf("removeAll: %v", err)
				if err == nil || !strings.Contains(err.Error(), mp) || !errors.Is(err, unix.EBUSY) {
					t.Fatalf("removeAll = %v, want an EBUSY error naming %s", err, mp)
				}
				if got := snapshot(t, host); !equalSnapshots(got, snap) {
					t.Errorf("host changed:\nbefore %v\nafter  %v", snap, got)
				}
				if got := mountpointsBelow(t, b); !slices.Equal(got, []string{mp}) {
					t.Errorf("mounts below = %v, want [%s]", got, mp)
				}
				if exists(filepath.Join(b, "sub", "plain")) {
					t.Error("plain sibling not removed")
				}
			})
		}
	}
}

// TestRemoveAllControl shows what the checks prevent: with all of them off,
// the walk goes into a same-filesystem bind mount and empties the host
// directory (a throwaway one here). If this stops happening, the detector
// tests above prove nothing.
func TestRemoveAllControl(t *testing.T) {
	requireRoot(t)
	host := hostDir(t, "throwaway")
	b := filepath.Join(t.TempDir(), "ctr")
	mp := filepath.Join(b, "rootfs")
	mkdir(t, mp)
	bindMount(t, host, mp)
	err := removeAll(b, nil, detectors{})
	if err == nil || !errors.Is(err, unix.EBUSY) {
		t.Errorf("removeAll without checks = %v, want rmdir's EBUSY on the mount point", err)
	}
	if exists(filepath.Join(host, "f1")) {
		t.Fatal("control failed: without checks the host files survived, so the detector tests are not testing anything")
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveAllPlain(t *testing.T) {
	host := hostDir(t, "host")
	snap := snapshot(t, host)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the path to remove
	}{
		{"missing", func(t *testing.T, dir string) string { return filepath.Join(dir, "nope") }},
		{"missing parent", func(t *testing.T, dir string) string { return filepath.Join(dir, "nope", "nope") }},
		{"parent is a file", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "f"), nil)
			return filepath.Join(dir, "f", "x")
		}},
		{"file", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "f"), []byte("x"))
			return filepath.Join(dir, "f")
		}},
		{"symlink to host dir is unlinked, not followed", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "link")
			if err := os.Symlink(host, p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"trailing slash on a symlink", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "link")
			if err := os.Symlink(host, p); err != nil {
				t.Fatal(err)
			}
			return p + "/"
		}},
		{"tree with symlinks, fifo, read-only dirs", func(t *testing.T, dir string) string {
			b := filepath.Join(dir, "b")
			writeFile(t, filepath.Join(b, "a/b/c/file"), []byte("x"))
			if err := os.Symlink(host, filepath.Join(b, "a/host")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("/nonexistent", filepath.Join(b, "a/b/dangling")); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(filepath.Join(b, "a/fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(b, "a/b"), 0o500); err != nil {
				t.Fatal(err)
			}
			return b
		}},
		{"path through a symlinked parent", func(t *testing.T, dir string) string {
			writeFile(t, filepath.Join(dir, "real/ctr/file"), []byte("x"))
			if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "alias")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "alias", "ctr")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := tc.setup(t, dir)
			if err := RemoveAll(p, nil); err != nil {
				t.Fatalf("RemoveAll(%s): %v", p, err)
			}
			if exists(strings.TrimSuffix(p, "/")) {
				t.Errorf("%s still exists", p)
			}
			if got := snapshot(t, host); !equalSnapshots(got, snap) {
				t.Errorf("host changed:\nbefore %v\nafter  %v", snap, got)
			}
		})
	}
	for _, p := range []string{"", "/", "/.", "//"} {
		if err := RemoveAll(p, nil); err == nil {
			t.Errorf("RemoveAll(%q) = nil, want a refusal", p)
		}
	}
}

// TestRemoveAllConcurrent runs deletes of the same tree at once, as two
// shim deletes may: ENOENT anywhere is success for both.
func TestRemoveAllConcurrent(t *testing.T) {
	b := filepath.Join(t.TempDir(), "ctr")
	for i := range 20 {
		for j := range 20 {
			writeFile(t, filepath.Join(b, fmt.Sprint("d", i), fmt.Sprint("e", j%4), fmt.Sprint("f", j)), []byte("x"))
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = RemoveAll(b, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("RemoveAll #%d: %v", i, err)
		}
	}
	if exists(b) {
		t.Errorf("%s still exists", b)
	}
}

func TestUnmountAll(t *testing.T) {
	requireRoot(t)
	t.Run("nothing mounted", func(t *testing.T) {
		for _, p := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
			um, err := UnmountAll(p, nil)
			if err != nil || len(um) != 0 {
				t.Errorf("UnmountAll(%s) = %v, %v", p, um, err)
			}
		}
	})
	t.Run("path itself and three stacked", func(t *testing.T) {
		host := hostDir(t, "host")
		snap := snapshot(t, host)
		mp := filepath.Join(t.TempDir(), "rootfs")
		mkdir(t, mp)
		bindMount(t, host, mp)
		tmpfsMount(t, mp)
		bindMount(t, host, mp)
		um, err := UnmountAll(mp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(um, []string{mp, mp, mp}) {
			t.Errorf("unmounted %v, want %s three times", um, mp)
		}
		if left := mountpointsBelow(t, mp); len(left) != 0 {
			t.Errorf("still mounted: %v", left)
		}
		if got := snapshot(t, host); !equalSnapshots(got, snap) {
			t.Errorf("host changed")
		}
	})
	t.Run("busy mount is detached", func(t *testing.T) {
		mp := filepath.Join(t.TempDir(), "busy")
		mkdir(t, mp)
		tmpfsMount(t, mp)
		f, err := os.Create(filepath.Join(mp, "held-open"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// The open file makes a plain umount fail with EBUSY.
		if err := unix.Unmount(mp, 0); !errors.Is(err, unix.EBUSY) {
			t.Fatalf("test setup: umount with an open file = %v, want EBUSY", err)
		}
		done, err := unmountOne(mp)
		if err != nil || !done {
			t.Fatalf("unmountOne(%s) = %v, %v, want a detach", mp, done, err)
		}
		if left := mountpointsBelow(t, mp); len(left) != 0 {
			t.Errorf("still mounted after detach: %v", left)
		}
	})
	t.Run("symlink in parent", func(t *testing.T) {
		dir := t.TempDir()
		mp := filepath.Join(dir, "real", "rootfs")
		mkdir(t, mp)
		tmpfsMount(t, mp)
		if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "alias")); err != nil {
			t.Fatal(err)
		}
		um, err := UnmountAll(filepath.Join(dir, "alias", "rootfs"), nil)
		if err != nil || !slices.Equal(um, []string{mp}) {
			t.Errorf("UnmountAll through a symlinked parent = %v, %v", um, err)
		}
	})
	t.Run("refuses root", func(t *testing.T) {
		if _, err := UnmountAll("/", nil); err == nil {
			t.Error("UnmountAll(/) = nil")
		}
		if _, err := UnmountAll("", nil); err == nil {
			t.Error(`UnmountAll("") = nil`)
		}
	})
}

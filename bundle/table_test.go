package bundle

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// readTable is mounttable.Read for a test.
func readTable(t *testing.T) *mounttable.Table {
	t.Helper()
	tab, err := mounttable.Read()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestUnmountAllFromATable: UnmountAll given a reading of the mount table
// (one gc sweep shares one) takes the mounts from it and confirms each on
// the live system.
func TestUnmountAllFromATable(t *testing.T) {
	requireRoot(t)
	t.Run("hidden under a later mount on its parent", func(t *testing.T) {
		host := hostDir(t, "host")
		snap := snapshot(t, host)
		b := filepath.Join(t.TempDir(), "ctr")
		rootfs, inner := filepath.Join(b, "rootfs"), filepath.Join(b, "rootfs", "data")
		mkdir(t, inner)
		bindMount(t, host, inner)
		tmpfsMount(t, rootfs) // hides rootfs/data
		if got := mountpointsBelow(t, b); !slices.Equal(got, []string{inner, rootfs}) {
			t.Fatalf("test setup: mounts %v", got)
		}
		um, err := UnmountAll(b, readTable(t))
		if err != nil {
			t.Fatalf("UnmountAll: %v", err)
		}
		if !slices.Equal(um, []string{rootfs, inner}) {
			t.Errorf("unmounted %v, want %s then (once uncovered) %s", um, rootfs, inner)
		}
		if left := mountpointsBelow(t, b); len(left) != 0 {
			t.Errorf("still mounted: %v", left)
		}
		if got := snapshot(t, host); !equalSnapshots(got, snap) {
			t.Error("host changed")
		}
	})
	t.Run("listed mounts already gone", func(t *testing.T) {
		b := filepath.Join(t.TempDir(), "ctr")
		mp := filepath.Join(b, "rootfs")
		mkdir(t, mp)
		tmpfsMount(t, mp)
		tab := readTable(t)
		if err := unix.Unmount(mp, 0); err != nil {
			t.Fatal(err)
		}
		if um, err := UnmountAll(b, tab); err != nil || len(um) != 0 {
			t.Errorf("UnmountAll(stale table) = %v, %v, want nothing to do", um, err)
		}
		if err := RemoveAll(b, tab); err != nil || exists(b) {
			t.Errorf("RemoveAll(stale table) = %v (exists: %v): a mount point the table lists and that is gone since must not stop it", err, exists(b))
		}
	})
}

// TestRemoveAllFromAStaleTable: a table read before a mount was made below
// the path never lets RemoveAll through that mount.
func TestRemoveAllFromAStaleTable(t *testing.T) {
	requireRoot(t)
	run := func(t *testing.T) {
		host := hostDir(t, "host")
		snap := snapshot(t, host)
		b := filepath.Join(t.TempDir(), "ctr")
		mkdir(t, b)
		tab := readTable(t)
		mp := filepath.Join(b, "rootfs", "data")
		mkdir(t, mp)
		bindMount(t, host, mp) // same filesystem: st_dev does not see it
		writeFile(t, filepath.Join(b, "config.json"), []byte("{}"))

		if um, err := UnmountAll(b, tab); err != nil || len(um) != 0 {
			t.Errorf("UnmountAll(table from before the mount) = %v, %v: the table does not list it", um, err)
		}
		err := RemoveAll(b, tab)
		t.Logf("RemoveAll: %v", err)
		if err == nil || !strings.Contains(err.Error(), mp) || !errors.Is(err, unix.EBUSY) {
			t.Errorf("RemoveAll = %v, want an EBUSY error naming %s", err, mp)
		}
		if got := snapshot(t, host); !equalSnapshots(got, snap) {
			t.Errorf("host changed:\nbefore %v\nafter  %v", snap, got)
		}
		if exists(filepath.Join(b, "config.json")) {
			t.Error("config.json not removed")
		}
	}
	t.Run("openat2 finds it", run)
	t.Run("without openat2 mountinfo is read afresh", func(t *testing.T) {
		// As on a kernel before 5.6: openat2 unusable, st_dev blind to a
		// bind mount of the same filesystem. Only a fresh mountinfo
		// reading can see the mount the table predates.
		if !openat2Works() {
			t.Fatal("openat2 is not usable here: the case without it cannot be told from the one with it")
		}
		openat2Missing.Store(true)
		t.Cleanup(func() { openat2Missing.Store(false) })
		run(t)
	})
}

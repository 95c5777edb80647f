package mounttable

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// tmpfs mounts a tmpfs on dir (created) until the test ends.
func tmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Mkdir(dir, 0o755); err != nil && err != unix.EEXIST {
		t.Fatal(err)
	}
	if err := unix.Mount("t", dir, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

func mountpoints(t *Table, p string) []string {
	var out []string
	for _, m := range t.Under(p) {
		out = append(out, m.Mountpoint)
	}
	return out
}

func TestUnder(t *testing.T) {
	testutil.NeedRoot(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, ab, sibling := filepath.Join(root, "a"), filepath.Join(root, "a", "b"), filepath.Join(root, "ab")
	tmpfs(t, a)
	tmpfs(t, ab)
	tmpfs(t, a) // stacked on a: listed after the first, and after a/b
	tmpfs(t, sibling)

	tab, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{a, ab, a}
	if got := mountpoints(tab, a); !slices.Equal(got, want) {
		t.Errorf("Under(%s) = %q, want %q (in mount order; %s is not below it)", a, got, want, sibling)
	}
	if got := mountpoints(tab, root); len(got) != 4 {
		t.Errorf("Under(%s) = %q, want the 4 mounts", root, got)
	}
	if got := mountpoints(tab, filepath.Join(root, "none")); len(got) != 0 {
		t.Errorf("Under(nothing mounted) = %q", got)
	}
	if len(tab.All()) <= 4 {
		t.Errorf("All() = %d mounts, want every mount of the namespace", len(tab.All()))
	}
}

func TestShared(t *testing.T) {
	testutil.NeedRoot(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := filepath.Join(root, "m")

	t.Run("nil reads afresh", func(t *testing.T) {
		var s *Shared
		before, err := s.Get()
		if err != nil {
			t.Fatal(err)
		}
		tmpfs(t, m)
		after, err := s.Get()
		if err != nil {
			t.Fatal(err)
		}
		if len(mountpoints(before, m)) != 0 || len(mountpoints(after, m)) != 1 {
			t.Errorf("nil Shared: before %q, after %q: want a new reading each time", mountpoints(before, m), mountpoints(after, m))
		}
	})

	t.Run("one reading until MaxAge", func(t *testing.T) {
		s := &Shared{MaxAge: time.Hour}
		first, err := s.Get()
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		got := make([]*Table, 8)
		for i := range got {
			wg.Go(func() { got[i], _ = s.Get() })
		}
		wg.Wait()
		for i, g := range got {
			if g != first {
				t.Errorf("Get %d: a new reading within MaxAge", i)
			}
		}
	})

	t.Run("read again when older", func(t *testing.T) {
		s := &Shared{MaxAge: 50 * time.Millisecond}
		first, err := s.Get()
		if err != nil {
			t.Fatal(err)
		}
		n := filepath.Join(root, "n")
		tmpfs(t, n)
		if again, _ := s.Get(); again != first {
			t.Fatal("a new reading within MaxAge")
		}
		time.Sleep(60 * time.Millisecond)
		later, err := s.Get()
		if err != nil {
			t.Fatal(err)
		}
		if later == first || len(mountpoints(later, n)) != 1 {
			t.Errorf("after MaxAge: same reading %v, mounts at %s: %q", later == first, n, mountpoints(later, n))
		}
	})
}

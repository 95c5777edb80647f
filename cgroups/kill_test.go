package cgroups

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// TestKillRemoveHybrid is the delete path on this machine's real layout
// (v1 hierarchies plus the unified one, like runc in hybrid mode): a
// container with a nested child cgroup, a direct member, a member in the
// child cgroup, and a shell with two children; a bystander outside.
func TestKillRemoveHybrid(t *testing.T) {
	requireRoot(t)
	mounts := cgroupMounts(t)
	name := uniqueName(t)
	dirs := makeCgroups(t, mountpoints(mounts), name)
	children := makeCgroups(t, mountpoints(mounts), name+"/child")

	_, direct := startSleep(t)
	moveInto(t, direct.pid, dirs)
	_, nested := startSleep(t)
	moveInto(t, nested.pid, children)
	family := startFamily(t, dirs)
	_, bystander := startSleep(t)

	state := map[string]string{}
	for i, m := range mounts {
		state[m.subsys] = dirs[i]
	}
	set, errs := Find(Evidence{StatePaths: state, CgroupsPath: "/" + name})
	if len(errs) > 0 {
		t.Fatalf("Find: %v", errs)
	}
	if got, want := sorted(set.Dirs), sorted(dirs); !slices.Equal(got, want) {
		t.Fatalf("Find dirs:\n got %v\nwant %v", got, want)
	}
	if !set.Contains(direct.pid) || !set.Contains(nested.pid) || set.Contains(bystander.pid) {
		t.Fatal("Contains disagrees with the cgroups")
	}
	// The same from a reading of the mount table taken before (one gc
	// sweep shares one across its deletes).
	mt, err := mounttable.Read()
	if err != nil {
		t.Fatal(err)
	}
	shared, sharedErrs := FindEach(mt, Evidence{StatePaths: state, CgroupsPath: "/" + name})
	if len(sharedErrs[0]) > 0 || !slices.Equal(sorted(shared[0].Dirs), sorted(dirs)) || !shared[0].Contains(direct.pid) {
		t.Fatalf("FindEach(a reading of the mount table) = %v, %v; want %v", shared[0].Dirs, sharedErrs[0], dirs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	n, err := set.Kill(ctx)
	killTime := time.Since(start)
	if err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if want := 2 + len(family); n != want {
		t.Errorf("Kill signalled %d processes, want %d", n, want)
	}
	assertEmpty(t, dirs...)
	assertGone(t, direct, nested)
	assertGone(t, family...)
	assertAlive(t, bystander)

	start = time.Now()
	removed, err := set.Remove(ctx)
	removeTime := time.Since(start)
	if err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got, want := sorted(removed), sorted(append(append([]string{}, dirs...), children...)); !slices.Equal(got, want) {
		t.Errorf("Remove removed:\n got %v\nwant %v", got, want)
	}
	for _, c := range children { // children before their parent
		if slices.Index(removed, c) > slices.Index(removed, filepath.Dir(c)) {
			t.Errorf("%s removed after its parent", c)
		}
	}
	assertNoDirs(t, append(dirs, children...)...)
	assertAlive(t, bystander)
	// Timings are logged, not asserted: speed is the benchmarks' to show.
	t.Logf("Kill %v, Remove %v for %d hierarchies", killTime, removeTime, len(dirs))

	// Idempotent: a second pass finds nothing to do.
	if n, err := set.Kill(ctx); n != 0 || err != nil {
		t.Errorf("second Kill = %d, %v; want 0, nil", n, err)
	}
	if removed, err := set.Remove(ctx); len(removed) != 0 || err != nil {
		t.Errorf("second Remove = %v, %v; want nothing, nil", removed, err)
	}
}

// TestKillV1 runs Kill on cgroup v1 only, with a hand-built set (which
// makes every operation validate it): a paused container (everything FROZEN
// before Kill, so the kills land only after the thaw), and a set without
// the freezer hierarchy (kill rounds without a freeze).
func TestKillV1(t *testing.T) {
	requireRoot(t)
	all := v1Only(cgroupMounts(t))
	var freezer string
	for _, m := range all {
		if m.subsys == "freezer" {
			freezer = m.mountpoint
		}
	}
	if freezer == "" {
		t.Fatal("no v1 freezer hierarchy mounted; this test needs one")
	}
	for _, tc := range []struct {
		name   string
		paused bool
	}{{"paused", true}, {"no freezer", false}} {
		t.Run(tc.name, func(t *testing.T) {
			mounts := mountpoints(all)
			if !tc.paused {
				mounts = slices.DeleteFunc(mounts, func(m string) bool { return m == freezer })
			}
			name := uniqueName(t)
			dirs := makeCgroups(t, mounts, name)
			children := makeCgroups(t, mounts, name+"/child")
			_, direct := startSleep(t)
			moveInto(t, direct.pid, dirs)
			_, nested := startSleep(t)
			moveInto(t, nested.pid, children)
			family := startFamily(t, dirs)
			_, bystander := startSleep(t)

			if tc.paused {
				fdir := filepath.Join(freezer, name)
				if err := os.WriteFile(filepath.Join(fdir, "freezer.state"), []byte("FROZEN"), 0); err != nil {
					t.Fatal(err)
				}
				for i := 0; ; i++ {
					b, _ := os.ReadFile(filepath.Join(fdir, "freezer.state"))
					if strings.TrimSpace(string(b)) == "FROZEN" {
						break
					}
					if i > 1000 {
						t.Fatalf("freezer did not freeze: %s", b)
					}
					time.Sleep(time.Millisecond)
				}
			}

			set := &Set{Dirs: dirs}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := set.Kill(ctx)
			if err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if want := 2 + len(family); n != want {
				t.Errorf("Kill signalled %d, want %d", n, want)
			}
			assertEmpty(t, dirs...)
			assertGone(t, direct, nested)
			assertGone(t, family...)
			assertAlive(t, bystander)
			if _, err := set.Remove(ctx); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			assertNoDirs(t, append(dirs, children...)...)
		})
	}
}

// mountPrivateCgroup2 mounts cgroup2 at a fresh directory.
func mountPrivateCgroup2(t *testing.T) string {
	t.Helper()
	mp := t.TempDir()
	if err := unix.Mount("none", mp, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2 at %s: %v", mp, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mp, err)
		}
	})
	return mp
}

// pureV2Table is the real mount table with every cgroup mount but mp
// dropped: what Find sees on a pure cgroup2 host that mounts it at mp.
func pureV2Table(t *testing.T, mp string) *table {
	t.Helper()
	tb, err := loadTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	var ms []mountEntry
	for _, m := range tb.mounts {
		if m.cgroup && m.mountpoint != mp {
			continue
		}
		ms = append(ms, m)
	}
	tb.mounts = ms
	return tb
}

// TestKillRemovePureCgroup2 runs the delete path against a cgroup2
// hierarchy mounted at an arbitrary mountpoint, with cgroup.kill and with
// the freeze fallback used by kernels that lack it.
func TestKillRemovePureCgroup2(t *testing.T) {
	requireRoot(t)
	mp := mountPrivateCgroup2(t)
	for _, tc := range []struct {
		name     string
		killFile string
	}{
		{"cgroup.kill", "cgroup.kill"},
		{"freeze fallback", "cgroup.kill.absent-in-this-test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := v2KillFile
			v2KillFile = tc.killFile
			defer func() { v2KillFile = old }()

			name := uniqueName(t)
			dirs := makeCgroups(t, []string{mp}, name)
			children := makeCgroups(t, []string{mp}, name+"/child")
			_, direct := startSleep(t)
			moveInto(t, direct.pid, dirs)
			_, nested := startSleep(t)
			moveInto(t, nested.pid, children)
			family := startFamily(t, dirs)
			_, bystander := startSleep(t)

			for _, ev := range []Evidence{
				{StatePaths: map[string]string{"": dirs[0]}},
				{CgroupsPath: "/" + name},
			} {
				set, errs := pureV2Table(t, mp).find(ev)
				if len(errs) > 0 || !slices.Equal(set.Dirs, dirs) {
					t.Fatalf("find(%+v) = %v, %v; want %v", ev, set.Dirs, errs, dirs)
				}
			}
			set, _ := pureV2Table(t, mp).find(Evidence{CgroupsPath: "/" + name})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := set.Kill(ctx)
			if err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if want := 2 + len(family); n != want {
				t.Errorf("Kill signalled %d, want %d", n, want)
			}
			assertEmpty(t, dirs...)
			assertGone(t, direct, nested)
			assertGone(t, family...)
			assertAlive(t, bystander)
			removed, err := set.Remove(ctx)
			if err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if len(removed) != 2 {
				t.Errorf("Remove removed %v; want the cgroup and its child", removed)
			}
			assertNoDirs(t, append(dirs, children...)...)
		})
	}
}

// TestFindCgroup2AnyMountpoint: with the unified hierarchy mounted twice
// (/sys/fs/cgroup/unified and a private mount), Find yields one directory
// for it, through the mount the state names.
func TestFindCgroup2AnyMountpoint(t *testing.T) {
	requireRoot(t)
	mp := mountPrivateCgroup2(t)
	name := uniqueName(t)
	dir := makeCgroups(t, []string{mp}, name)[0]
	set, errs := Find(Evidence{StatePaths: map[string]string{"": dir}, CgroupsPath: "/" + name})
	if len(errs) > 0 {
		t.Fatalf("Find: %v", errs)
	}
	var v2 []string
	for _, d := range set.Dirs {
		var sf unix.Statfs_t
		if err := unix.Statfs(filepath.Dir(d), &sf); err != nil {
			t.Fatal(err)
		}
		if sf.Type == unix.CGROUP2_SUPER_MAGIC {
			v2 = append(v2, d)
		}
	}
	if !slices.Equal(v2, []string{dir}) {
		t.Errorf("cgroup2 dirs = %v; want only %s", v2, dir)
	}
	if want := len(cgroupMounts(t)); len(set.Dirs) != want {
		t.Errorf("Find returned %d dirs %v; want one per hierarchy (%d)", len(set.Dirs), set.Dirs, want)
	}
}

// TestKillVerified: only the exact process (pid and start time) is killed.
func TestKillVerified(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// comm with spaces and parentheses: stat must be split after the last ')'.
	bin := filepath.Join(t.TempDir(), "a) b (c")
	src, err := os.ReadFile("/usr/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"sleep", bin} {
		cmd, p := startSleep(t, b)

		killed, err := KillVerified(ctx, p.pid, p.start+1)
		if killed || err != nil {
			t.Fatalf("%s: KillVerified with a wrong start time = %v, %v; want false, nil", b, killed, err)
		}
		time.Sleep(5 * time.Millisecond)
		assertAlive(t, p)

		killed, err = KillVerified(ctx, p.pid, p.start)
		if !killed || err != nil {
			t.Fatalf("%s: KillVerified = %v, %v; want true, nil", b, killed, err)
		}
		assertGone(t, p) // a zombie until reaped

		killed, err = KillVerified(ctx, p.pid, p.start) // zombie
		if killed || err != nil {
			t.Errorf("%s: KillVerified on a zombie = %v, %v; want false, nil", b, killed, err)
		}
		_ = cmd.Wait()
		killed, err = KillVerified(ctx, p.pid, p.start) // reaped
		if killed || err != nil {
			t.Errorf("%s: KillVerified on a reaped pid = %v, %v; want false, nil", b, killed, err)
		}
	}

	for _, pid := range []int{0, -1, 1, os.Getpid()} {
		if killed, err := KillVerified(ctx, pid, 0); killed || err == nil {
			t.Errorf("KillVerified(%d) = %v, %v; want a refusal", pid, killed, err)
		}
	}
}

// TestKillMember: members are killed, bystanders and guarded pids are not.
func TestKillMember(t *testing.T) {
	requireRoot(t)
	mounts := cgroupMounts(t)
	name := uniqueName(t)
	dirs := makeCgroups(t, mountpoints(mounts), name)
	children := makeCgroups(t, mountpoints(mounts), name+"/child")
	_, member := startSleep(t)
	moveInto(t, member.pid, children)
	_, bystander := startSleep(t)
	set, errs := Find(Evidence{CgroupsPath: "/" + name})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if set.Contains(bystander.pid) || set.Contains(os.Getpid()) || set.Contains(0) || set.Contains(-5) {
		t.Error("Contains is true for a non-member")
	}
	if killed, err := set.KillMember(ctx, bystander.pid); killed || err != nil {
		t.Errorf("KillMember(bystander) = %v, %v; want false, nil", killed, err)
	}
	assertAlive(t, bystander)
	for _, pid := range []int{0, 1, os.Getpid()} {
		if killed, err := set.KillMember(ctx, pid); killed || err == nil {
			t.Errorf("KillMember(%d) = %v, %v; want a refusal", pid, killed, err)
		}
	}
	if !set.Contains(member.pid) {
		t.Fatal("Contains(member) = false")
	}
	if killed, err := set.KillMember(ctx, member.pid); !killed || err != nil {
		t.Fatalf("KillMember(member) = %v, %v; want true, nil", killed, err)
	}
	assertGone(t, member)
	if set.Contains(member.pid) {
		t.Error("Contains is true for a dead member")
	}
	if killed, err := set.KillMember(ctx, member.pid); killed || err != nil {
		t.Errorf("KillMember(dead member) = %v, %v; want false, nil", killed, err)
	}
	if _, err := set.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoDirs(t, dirs...)
}

// TestKillCancelled: a process that cannot die in time (here: frozen by a
// v1 freezer Kill does not know about, because the set lacks it) makes Kill
// return when ctx ends, naming the directory.
func TestKillCancelled(t *testing.T) {
	requireRoot(t)
	var unified, freezer string
	for _, m := range cgroupMounts(t) {
		switch {
		case m.v2:
			unified = m.mountpoint
		case m.subsys == "freezer":
			freezer = m.mountpoint
		}
	}
	if unified == "" || freezer == "" {
		t.Fatal("this test needs the v1 freezer and a cgroup2 mount (hybrid)")
	}
	name := uniqueName(t)
	dirs := makeCgroups(t, []string{unified, freezer}, name)
	_, p := startSleep(t)
	moveInto(t, p.pid, dirs)
	if err := os.WriteFile(filepath.Join(dirs[1], "freezer.state"), []byte("FROZEN"), 0); err != nil {
		t.Fatal(err)
	}
	set := &Set{Dirs: []string{dirs[0]}} // the freezer cgroup is unknown to it
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := set.Kill(ctx)
	if err == nil || !strings.Contains(err.Error(), dirs[0]) {
		t.Errorf("Kill = %v; want an error naming %s", err, dirs[0])
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Kill took %v after a 100ms ctx", d)
	}
	_ = os.WriteFile(filepath.Join(dirs[1], "freezer.state"), []byte("THAWED"), 0)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, err := set.Kill(ctx2); err != nil {
		t.Fatalf("Kill after thaw: %v", err)
	}
	assertGone(t, p)
}

// TestFindMountRoot: a cgroup2 mount whose root is not the hierarchy root
// (a bind mount of a sub-cgroup, as in a container without cgroupns).
func TestFindMountRoot(t *testing.T) {
	requireRoot(t)
	full := mountPrivateCgroup2(t)
	name := uniqueName(t)
	makeCgroups(t, []string{full}, name+"/ctr/child")
	bind := t.TempDir()
	if err := unix.Mount(filepath.Join(full, name), bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })
	tb := pureV2Table(t, bind)
	var root string
	for _, m := range tb.mounts {
		if m.mountpoint == bind {
			root = m.root
		}
	}
	if root != "/"+name {
		t.Fatalf("bind mount root = %q; want /%s", root, name)
	}

	for _, tc := range []struct {
		ev      Evidence
		want    []string
		wantErr bool
	}{
		{Evidence{CgroupsPath: "/" + name + "/ctr"}, []string{bind + "/ctr"}, false},
		{Evidence{StatePaths: map[string]string{"": bind + "/ctr"}}, []string{bind + "/ctr"}, false},
		{Evidence{CgroupsPath: "/" + name}, nil, true},                             // the mount's root
		{Evidence{StatePaths: map[string]string{"": bind}}, nil, true},             // the mount's root
		{Evidence{CgroupsPath: "/elsewhere/ctr"}, nil, true},                       // not reachable
		{Evidence{StatePaths: map[string]string{"": full + "/x"}}, nil, true},      // dropped from the table
		{Evidence{StatePaths: map[string]string{"": bind + "/../etc"}}, nil, true}, // escape
	} {
		set, errs := tb.find(tc.ev)
		if !slices.Equal(set.Dirs, tc.want) || (len(errs) > 0) != tc.wantErr {
			t.Errorf("find(%+v) = %v, %v; want %v, error %v", tc.ev, set.Dirs, errs, tc.want, tc.wantErr)
		}
	}
	set, _ := tb.find(Evidence{CgroupsPath: "/" + name + "/ctr"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	removed, err := set.Remove(ctx)
	if err != nil || !slices.Equal(removed, []string{bind + "/ctr/child", bind + "/ctr"}) {
		t.Errorf("Remove = %v, %v", removed, err)
	}
	assertNoDirs(t, filepath.Join(full, name, "ctr"))
}

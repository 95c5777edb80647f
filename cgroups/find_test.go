package cgroups

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestExpandSystemdPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" = error
	}{
		{"system.slice:cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"},
		{"kubepods-besteffort-pod1.slice:cri-containerd:abc", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope"},
		{":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"},
		{"-.slice:docker:x", "/docker-x.scope"},
		{"system.slice:docker:my.slice", "/system.slice/my.slice"},
		{"user.slice:runc:1", "/user.slice/runc-1.scope"},
		{"a:b:c", ""},               // not a slice
		{".slice:a:b", ""},          // empty slice name
		{"a--b.slice:p:n", ""},      // empty component
		{"-a.slice:p:n", ""},        // leading dash
		{"a/b.slice:p:n", ""},       // path separator
		{"system.slice:p:", ""},     // empty name
		{"system.slice:p:../x", ""}, // path in name
		{"system.slice:..:x", ""},
		{"system.slice:p:..", ""},
		{"a:b", ""},
		{"a:b:c:d", ""},
		{"::", ""},
		{"", ""},
	} {
		got, err := systemdPath(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("systemdPath(%q) = %q; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("systemdPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCgroupsPath(t *testing.T) {
	for _, tc := range []struct {
		in      string
		systemd bool
		want    string // "" = error
		rel     bool
	}{
		{"/default/ctr", false, "/default/ctr", false},
		{"/default//ctr/", false, "/default/ctr", false},
		{"default/ctr", false, "default/ctr", true},
		{"system.slice:cri-containerd:abc", false, "/system.slice/cri-containerd-abc.scope", false}, // a:b:c is systemd anyway
		{"/a:b:c", false, "/a:b:c", false},                                                          // has '/': cgroupfs
		{"/default/ctr", true, "", false},                                                           // systemd form required
		{"a:b", false, "a:b", true},                                                                 // a relative cgroupfs name
		{"a:b", true, "", false},
		{"/", false, "", false},
		{"//", false, "", false},
		{".", false, "", false},
		{"../..", false, "", false},
		{"/a/../..", false, "", false},
		{"/a/..", false, "", false},
		{"a\x00b", false, "", false},
	} {
		got, rel, err := parseCgroupsPath(tc.in, tc.systemd)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseCgroupsPath(%q, %v) = %q; want an error", tc.in, tc.systemd, got)
			}
			continue
		}
		if err != nil || got != tc.want || rel != tc.rel {
			t.Errorf("parseCgroupsPath(%q, %v) = %q, %v, %v; want %q, %v", tc.in, tc.systemd, got, rel, err, tc.want, tc.rel)
		}
	}
}

// ownCgroupDirs returns the directories of the calling process's cgroups,
// one per mounted hierarchy, and its cgroup paths.
func ownCgroupDirs(t *testing.T) []string {
	t.Helper()
	own, err := readProcCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range cgroupMounts(t) {
		key := ""
		if !m.v2 {
			for k := range own {
				if k != "" && slices.Contains(strings.Split(k, ","), m.subsys) {
					key = k
				}
			}
		}
		if p, ok := own[key]; ok {
			out = append(out, filepath.Join(m.mountpoint, p))
		}
	}
	return out
}

// assertSafe is an oracle independent of Find: every directory lies
// strictly below a cgroup mountpoint, has no "..", and no guarded process
// (this one, its parent, pid 1) is in it or below it.
func assertSafe(t *testing.T, dirs []string) {
	t.Helper()
	guarded := []int{os.Getpid(), os.Getppid(), 1}
	for _, d := range dirs {
		if d != filepath.Clean(d) || !filepath.IsAbs(d) || hasDotDot(d) {
			t.Errorf("unsafe dir %q: not clean and absolute", d)
			continue
		}
		below := false
		for _, m := range cgroupMounts(t) {
			if d == m.mountpoint {
				t.Errorf("unsafe dir %q: a hierarchy root", d)
			}
			if strings.HasPrefix(d, m.mountpoint+"/") {
				below = true
			}
		}
		if !below {
			t.Errorf("unsafe dir %q: not below a cgroup mount", d)
		}
		for _, pid := range procsBelow(d) {
			if slices.Contains(guarded, pid) {
				t.Errorf("unsafe dir %q: holds guarded pid %d", d, pid)
			}
		}
	}
}

// TestFindGarbage feeds garbage evidence to Find: it must never return a
// dangerous directory, and must say what it rejected.
func TestFindGarbage(t *testing.T) {
	requireRoot(t)
	mounts := cgroupMounts(t)
	var memory, unified string
	for _, m := range mounts {
		if m.subsys == "memory" {
			memory = m.mountpoint
		}
		if m.v2 {
			unified = m.mountpoint
		}
	}
	own := ownCgroupDirs(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(mounts[0].mountpoint, link); err != nil {
		t.Fatal(err)
	}
	ownCg, err := readProcCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name    string
		ev      Evidence
		wantErr bool
		noDirs  bool
	}
	cases := []tc{
		{"nothing", Evidence{}, false, true},
		{"empty systemd", Evidence{Systemd: true}, false, true},
		{"slash", Evidence{CgroupsPath: "/"}, true, true},
		{"double slash", Evidence{CgroupsPath: "//"}, true, true},
		{"dot", Evidence{CgroupsPath: "."}, true, true},
		{"dotdot", Evidence{CgroupsPath: "../.."}, true, true},
		{"dotdot inside", Evidence{CgroupsPath: "/a/../../b"}, true, true},
		{"colon pair systemd", Evidence{CgroupsPath: "a:b", Systemd: true}, true, true},
		{"colon pair cgroupfs", Evidence{CgroupsPath: "a:b"}, true, true}, // relative: not used
		{"relative", Evidence{CgroupsPath: "default/ctr"}, true, true},
		{"three colons", Evidence{CgroupsPath: "a:b:c"}, true, true},
		{"empty triple", Evidence{CgroupsPath: "::"}, true, true},
		{"root slice", Evidence{CgroupsPath: "-.slice::"}, true, true},
		{"slice traversal", Evidence{CgroupsPath: "system.slice:x:../../.."}, true, true},
		{"nul", Evidence{CgroupsPath: "/a\x00b"}, true, true},
		{"state root", Evidence{StatePaths: map[string]string{"memory": "/"}}, true, true},
		{"state empty", Evidence{StatePaths: map[string]string{"": ""}}, true, true},
		{"state relative", Evidence{StatePaths: map[string]string{"cpu": "default/ctr"}}, true, true},
		{"state tmpfs", Evidence{StatePaths: map[string]string{"cpu": "/sys/fs/cgroup"}}, true, true},
		{"state etc", Evidence{StatePaths: map[string]string{"cpu": "/etc"}}, true, true},
		{"state symlink to root", Evidence{StatePaths: map[string]string{"cpu": link}}, true, true},
		{"state escape", Evidence{StatePaths: map[string]string{"cpu": mounts[0].mountpoint + "/x/../../../etc"}}, true, true},
	}
	for _, m := range mounts {
		cases = append(cases, tc{"state hierarchy root " + m.mountpoint, Evidence{StatePaths: map[string]string{m.subsys: m.mountpoint}}, true, true})
	}
	for _, d := range own {
		// In a hierarchy where this process sits in the root cgroup, its
		// own cgroup is the root; elsewhere it is a real cgroup. Both are
		// refused, and a refused cgroup path is dropped everywhere.
		cases = append(cases,
			tc{"state own cgroup " + d, Evidence{StatePaths: map[string]string{"x": d}}, true, true},
			tc{"state own parent " + d, Evidence{StatePaths: map[string]string{"x": filepath.Dir(d)}}, true, true},
			tc{"state own cgroup path in two hierarchies " + d, Evidence{StatePaths: map[string]string{"x": d, "y": filepath.Join(mounts[0].mountpoint, strings.TrimPrefix(d, filepath.Dir(filepath.Dir(d))))}}, true, false},
		)
	}
	for k, p := range ownCg {
		cases = append(cases, tc{"spec own cgroup " + k, Evidence{CgroupsPath: p}, true, true})
		cases = append(cases, tc{"spec own cgroup " + k + " systemd", Evidence{CgroupsPath: p, Systemd: true}, true, true})
	}
	if memory != "" {
		cases = append(cases, tc{"memory garbage", Evidence{StatePaths: map[string]string{"memory": memory + "/../memory"}}, true, true})
	}
	if unified != "" {
		cases = append(cases, tc{"unified slash", Evidence{StatePaths: map[string]string{"": unified + "/"}}, true, true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			set, errs := Find(c.ev)
			if set == nil {
				t.Fatal("Find returned a nil set")
			}
			assertSafe(t, set.Dirs)
			if c.wantErr && len(errs) == 0 {
				t.Errorf("Find(%+v) returned no error (dirs %v)", c.ev, set.Dirs)
			}
			if !c.wantErr && len(errs) > 0 {
				t.Errorf("Find(%+v) errors: %v", c.ev, errs)
			}
			if c.noDirs && len(set.Dirs) > 0 {
				t.Errorf("Find(%+v) = %v; want no dirs", c.ev, set.Dirs)
			}
			for _, err := range errs {
				if msg := err.Error(); msg == "" || strings.ToLower(msg[:1]) != msg[:1] {
					t.Errorf("error %q is not lowercase", msg)
				}
			}
		})
	}
}

// TestFindRefusesOwnCgroup moves this test process into a fresh cgroup (in
// the unified and the pids hierarchies) and checks that neither that cgroup
// nor its parent is ever acted on, by Find or by a hand-built Set.
func TestFindRefusesOwnCgroup(t *testing.T) {
	requireRoot(t)
	var targets []string
	for _, m := range cgroupMounts(t) {
		if m.v2 || m.subsys == "pids" {
			targets = append(targets, m.mountpoint)
		}
	}
	if len(targets) == 0 {
		t.Fatal("no unified or pids hierarchy mounted")
	}
	name := uniqueName(t)
	parents := makeCgroups(t, targets, name)
	selfDirs := makeCgroups(t, targets, name+"/self")
	siblings := makeCgroups(t, targets, name+"/sibling")
	before := ownCgroupDirs(t)
	moveInto(t, os.Getpid(), selfDirs)
	t.Cleanup(func() { // back where it was, before the cgroups are removed
		for _, d := range before {
			for _, tg := range targets {
				if strings.HasPrefix(d, tg+"/") || d == tg {
					_ = os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
				}
			}
		}
	})

	for _, tc := range []struct {
		ev       Evidence
		wantErrs int
	}{
		// The spec path maps onto every hierarchy: refused in each that
		// holds this process, then dropped everywhere.
		{Evidence{CgroupsPath: "/" + name}, len(targets)},
		{Evidence{CgroupsPath: "/" + name + "/self"}, len(targets)},
		// A refused state path is not mapped anywhere else.
		{Evidence{StatePaths: map[string]string{"": parents[0]}}, 1},
		{Evidence{StatePaths: map[string]string{"pids": selfDirs[len(selfDirs)-1]}}, 1},
	} {
		ev := tc.ev
		set, errs := Find(ev)
		assertSafe(t, set.Dirs)
		if len(errs) < tc.wantErrs {
			t.Errorf("Find(%+v): %d errors %v; want at least %d", ev, len(errs), errs, tc.wantErrs)
		}
		if len(set.Dirs) > 0 {
			t.Errorf("Find(%+v) = %v; a cgroup path refused anywhere must be dropped everywhere", ev, set.Dirs)
		}
		for _, d := range set.Dirs {
			if slices.Contains(parents, d) || slices.Contains(selfDirs, d) {
				t.Errorf("Find(%+v) returned %s, which holds this process", ev, d)
			}
		}
	}

	// A hand-built set is validated too: nothing is killed or removed
	// there, siblings included.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	set := &Set{Dirs: append(append([]string{}, parents...), selfDirs...)}
	if n, err := set.Kill(ctx); n != 0 || err == nil {
		t.Errorf("Kill on own cgroups = %d, %v; want 0 and a refusal", n, err)
	}
	removed, err := set.Remove(ctx)
	if len(removed) != 0 || err == nil {
		t.Errorf("Remove on own cgroups = %v, %v; want nothing and a refusal", removed, err)
	}
	for _, d := range append(append(parents, selfDirs...), siblings...) {
		if _, err := os.Lstat(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	if killed, err := set.KillMember(ctx, os.Getpid()); killed || err == nil {
		t.Errorf("KillMember(self) = %v, %v", killed, err)
	}
	if set.Contains(os.Getpid()) {
		t.Error("Contains(self) on a refused set")
	}
}

// TestEmptySets: the zero Set and a nil *Set hold nothing, without errors.
func TestEmptySets(t *testing.T) {
	ctx := context.Background()
	for _, s := range []*Set{nil, {}, {Dirs: []string{}}} {
		if n, err := s.Kill(ctx); n != 0 || err != nil {
			t.Errorf("Kill = %d, %v", n, err)
		}
		if r, err := s.Remove(ctx); len(r) != 0 || err != nil {
			t.Errorf("Remove = %v, %v", r, err)
		}
		if s.Contains(os.Getpid()) {
			t.Error("Contains(self)")
		}
		if k, err := s.KillMember(ctx, 12345678); k || err != nil {
			t.Errorf("KillMember = %v, %v", k, err)
		}
	}
	// Hand-built garbage is refused by every operation.
	bad := &Set{Dirs: []string{"/", "/etc", "", "relative", "/sys/fs/cgroup", "/sys/fs/cgroup/unified/../../../etc"}}
	if n, err := bad.Kill(ctx); n != 0 || err == nil {
		t.Errorf("Kill(garbage) = %d, %v; want 0 and errors", n, err)
	}
	if r, err := bad.Remove(ctx); len(r) != 0 || err == nil {
		t.Errorf("Remove(garbage) = %v, %v; want nothing and errors", r, err)
	} else {
		t.Logf("Remove(garbage): %v", err)
	}
}

package cgroups

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// Environment of TestFindInCgroupNamespaceChild, set by
// TestFindInCgroupNamespace.
const (
	nsChildDirs = "CGROUPS_TEST_NS_DIRS" // the child's own cgroups, ':'-separated
	nsChildName = "CGROUPS_TEST_NS_NAME" // their cgroup path below each mount
)

// TestFindInCgroupNamespace runs the test binary in a fresh cgroup, in a
// cgroup namespace rooted there (`unshare -C`), with the host's cgroup
// mounts still visible: their mountinfo root is then "/.." and the child's
// /proc/self/cgroup says "/". Find, given the child's own cgroups as
// evidence, must refuse them: with the mount's root taken as "/" they pass
// for "/<name>", a cgroup that holds nobody guarded (found by FuzzFindMounts'
// model, checked here on the real kernel).
func TestFindInCgroupNamespace(t *testing.T) {
	requireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is not installed")
	}
	var targets []string
	for _, m := range cgroupMounts(t) {
		if m.v2 || m.subsys == "pids" {
			targets = append(targets, m.mountpoint)
		}
	}
	name := uniqueName(t)
	dirs := makeCgroups(t, targets, name)
	// The shell joins the cgroups, then becomes unshare, which makes the
	// namespace and becomes the test binary.
	script := `for d in $(echo "$` + nsChildDirs + `" | tr : ' '); do echo $$ > "$d/cgroup.procs" || exit 1; done; exec "$0" -C "$1" -test.run='^TestFindInCgroupNamespaceChild$' -test.v -test.count=1`
	cmd := exec.Command("sh", "-c", script, unshare, os.Args[0])
	cmd.Env = append(os.Environ(), nsChildDirs+"="+strings.Join(dirs, ":"), nsChildName+"="+name)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFindInCgroupNamespaceChild") {
		t.Fatalf("child in a cgroup namespace: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

// TestFindInCgroupNamespaceChild is TestFindInCgroupNamespace's child; on
// its own (no environment) it has nothing to check and passes.
func TestFindInCgroupNamespaceChild(t *testing.T) {
	dirsEnv, name := os.Getenv(nsChildDirs), os.Getenv(nsChildName)
	if dirsEnv == "" {
		return
	}
	own := strings.Split(dirsEnv, ":")

	// The precondition: the host's mounts seen from inside the namespace.
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		t.Fatal(err)
	}
	outside := 0
	for _, in := range infos {
		for _, d := range own {
			if filepath.Dir(d) == filepath.Clean(in.Mountpoint) && hasDotDot(in.Root) {
				outside++
			}
		}
	}
	if outside == 0 {
		t.Fatalf("no cgroup mount of %v has a root outside this cgroup namespace: %+v", own, infos)
	}
	for _, d := range own {
		if !slices.Contains(procsOf(d), os.Getpid()) {
			t.Fatalf("precondition: pid %d is not in %s", os.Getpid(), d)
		}
	}

	for _, ev := range []Evidence{
		{StatePaths: map[string]string{"": own[0]}},
		{StatePaths: map[string]string{"x": own[len(own)-1]}},
		{CgroupsPath: "/" + name},
		{CgroupsPath: name},
	} {
		set, errs := Find(ev)
		for _, d := range set.Dirs {
			if slices.Contains(own, d) || slices.Contains(procsBelow(d), os.Getpid()) {
				t.Errorf("Find(%+v) = %v: %s holds this process", ev, set.Dirs, d)
			}
		}
		t.Logf("Find(%+v) = %v, %v", ev, set.Dirs, errs)
	}
	// A hand-built set is validated by the same rules.
	dirs, errs := (&Set{Dirs: own}).resolve()
	if len(dirs) != 0 || len(errs) != len(own) {
		t.Errorf("resolve(%v) = %+v, %v; want every directory refused", own, dirs, errs)
	}
}

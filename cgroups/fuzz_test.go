package cgroups

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/procstat"
)

// Fuzz targets for what the delete path hands package cgroups from a task
// directory and runc's state (issue 11): the spec's cgroupsPath, runc's
// cgroup_paths, and the /proc/<pid>/stat line whose start time is the proof
// a pid is the container's init. Find only computes paths from mountinfo
// and /proc/<pid>/cgroup, Contains only reads /proc; nothing here signals a
// process or writes to a cgroup (Kill, KillMember, KillVerified and Remove
// are never called). The seed corpus is in testdata/fuzz/<Target>/; `make
// fuzz` and `make fuzz-short` run the targets.

// fuzzStatePaths decodes runc's cgroup_paths from the fuzz input: a JSON
// object as in state.json, else "key=dir" lines.
func fuzzStatePaths(data []byte) map[string]string {
	var m map[string]string
	if json.Unmarshal(data, &m) == nil {
		return m
	}
	if len(data) == 0 {
		return nil
	}
	m = map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// hostMount is a cgroup mount of this machine, read independently of the
// package's table.
type hostMount struct {
	mountpoint, root string
	v2               bool
	controllers      map[string]bool // v1 super options
}

func hostCgroupMounts(f *testing.F) []hostMount {
	f.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		f.Fatal(err)
	}
	return cgroupMountsOf(infos)
}

func cgroupMountsOf(infos []*mountinfo.Info) []hostMount {
	var out []hostMount
	for _, in := range infos {
		if in.FSType != "cgroup" && in.FSType != "cgroup2" {
			continue
		}
		m := hostMount{mountpoint: filepath.Clean(in.Mountpoint), root: in.Root, v2: in.FSType == "cgroup2", controllers: map[string]bool{}}
		for _, o := range strings.Split(in.VFSOptions, ",") {
			m.controllers[o] = true
		}
		out = append(out, m)
	}
	return out
}

// ownCgroupOf returns, from a /proc/<pid>/cgroup map, the cgroup path of a
// process in mount m's hierarchy: the "" line for cgroup2, else the line
// whose every controller is one of m's options.
func (m hostMount) ownCgroupOf(paths map[string]string) (string, bool) {
	if m.v2 {
		p, ok := paths[""]
		return p, ok
	}
	for k, p := range paths {
		if k == "" {
			continue
		}
		all := true
		for _, c := range strings.Split(k, ",") {
			all = all && m.controllers[c]
		}
		if all {
			return p, true
		}
	}
	return "", false
}

// assertSafeDirs is the oracle for Find's result, independent of its table:
// every directory is absolute, clean, without "..", strictly below a cgroup
// mount and none of the mounts' roots, not reached through a mount made
// outside the cgroup namespace (root with ".."); and no guarded process's
// cgroup in
// the hierarchy of the mount the directory is reached through (all mounts it
// lies below when visible is nil) is the directory or below it.
func assertSafeDirs(t *testing.T, dirs []string, mounts []hostMount, visible func(string) *hostMount, guarded map[string]map[string]string) {
	t.Helper()
	for _, d := range dirs {
		if d != filepath.Clean(d) || !filepath.IsAbs(d) || hasDotDot(d) {
			t.Errorf("unsafe dir %q: not clean and absolute", d)
			continue
		}
		var through []hostMount
		for _, m := range mounts {
			if d == m.mountpoint {
				t.Errorf("unsafe dir %q: the root of a cgroup mount", d)
			}
			if under(d, m.mountpoint) && d != m.mountpoint {
				through = append(through, m)
			}
		}
		if len(through) == 0 {
			t.Errorf("unsafe dir %q: not below a cgroup mount", d)
		}
		if visible != nil {
			through = nil
			if m := visible(d); m != nil {
				through = append(through, *m)
			} else {
				t.Errorf("unsafe dir %q: the mount it lies in is not a cgroup mount", d)
			}
		}
		for _, m := range through {
			if hasDotDot(m.root) {
				// Made outside the caller's cgroup namespace: the caller's
				// own cgroup may be any directory of it.
				t.Errorf("unsafe dir %q: through mount %s, whose root %s lies outside the cgroup namespace", d, m.mountpoint, m.root)
				continue
			}
			cg := path.Join(m.root, strings.TrimPrefix(d, m.mountpoint))
			if cg == "/" {
				t.Errorf("unsafe dir %q: a hierarchy's root cgroup", d)
			}
			for what, paths := range guarded {
				own, ok := m.ownCgroupOf(paths)
				if ok && (own == cg || strings.HasPrefix(own, strings.TrimSuffix(cg, "/")+"/")) {
					t.Errorf("unsafe dir %q: cgroup %s holds %s (in %s)", d, cg, what, own)
				}
			}
		}
	}
}

// visibleMount returns the mount path d resolves into among infos (the
// longest mountpoint that is d or its ancestor, the last of equal ones) when
// it is a cgroup mount, else nil.
func visibleMount(infos []*mountinfo.Info, d string) *hostMount {
	var best *mountinfo.Info
	for _, in := range infos {
		mp := filepath.Clean(in.Mountpoint)
		if !under(d, mp) {
			continue
		}
		if best == nil || len(mp) >= len(filepath.Clean(best.Mountpoint)) {
			best = in
		}
	}
	if best == nil {
		return nil
	}
	ms := cgroupMountsOf([]*mountinfo.Info{best})
	if len(ms) == 0 {
		return nil
	}
	return &ms[0]
}

// kernelMountinfo reports whether the mounts are what the kernel can print:
// unique mount IDs, absolute mountpoints and roots ("/.." components
// included: a cgroup mount made outside the reader's cgroup namespace).
func kernelMountinfo(infos []*mountinfo.Info) bool {
	ids := map[int]bool{}
	for _, in := range infos {
		if ids[in.ID] || !strings.HasPrefix(in.Mountpoint, "/") || !strings.HasPrefix(in.Root, "/") {
			return false
		}
		ids[in.ID] = true
	}
	return true
}

// kernelProcCgroup reports whether a /proc/<pid>/cgroup map is what the
// kernel can print: absolute paths ("/.." components included, outside the
// reader's cgroup namespace), no controller named on two lines.
func kernelProcCgroup(paths map[string]string) bool {
	seen := map[string]bool{}
	for k, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return false
		}
		if k == "" {
			continue
		}
		for _, c := range strings.Split(k, ",") {
			if seen[c] {
				return false
			}
			seen[c] = true
		}
	}
	return true
}

func assertLowercase(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		if msg := err.Error(); msg == "" || strings.ToLower(msg[:1]) != msg[:1] {
			t.Errorf("error %q is not lowercase", msg)
		}
	}
}

// FuzzFind hands Find, against this machine's real cgroup mounts, any
// cgroupsPath (spec, cgroupfs or systemd form) and any runc cgroup_paths,
// and checks its promise: never a directory outside a cgroup mount, never a
// hierarchy root, never one reached through a mount made outside the
// cgroup namespace, never one holding (or an ancestor of the cgroup of)
// this process, its parent or pid 1; and the membership proof KillMember relies
// on (Contains) never admits those processes, so a pid named only by
// init.pid is never signalled when it is one of them.
func FuzzFind(f *testing.F) {
	mounts := hostCgroupMounts(f)
	f.Fuzz(func(t *testing.T, cgroupsPath string, systemd bool, statePaths []byte) {
		ev := Evidence{CgroupsPath: cgroupsPath, Systemd: systemd, StatePaths: fuzzStatePaths(statePaths)}
		set, errs := Find(ev)
		if set == nil {
			t.Fatal("Find returned a nil set")
		}
		guarded := map[string]map[string]string{}
		for _, pid := range []int{os.Getpid(), os.Getppid(), 1} {
			paths, err := readProcCgroup(pid)
			if err != nil {
				t.Fatalf("read cgroups of guarded pid %d: %v", pid, err)
			}
			guarded["pid "+strconv.Itoa(pid)] = paths
		}
		assertSafeDirs(t, set.Dirs, mounts, nil, guarded)
		assertLowercase(t, errs)
		if len(set.Dirs) != len(set.dirs) {
			t.Errorf("Find's set: %d dirs, %d resolved", len(set.Dirs), len(set.dirs))
		}
		for _, pid := range []int{os.Getpid(), os.Getppid(), 1} {
			if set.Contains(pid) {
				t.Errorf("Find(%+v) = %v, whose membership admits guarded pid %d", ev, set.Dirs, pid)
			}
		}
	})
}

// FuzzFindMounts is FuzzFind against a mount table and guarded cgroups
// from the fuzz input (mountinfo lines, /proc/self/cgroup and pid 1's
// /proc/1/cgroup as the kernel prints them): hybrid, pure v1, pure
// cgroup2, cgroup mounts whose root is not the hierarchy root (inside a
// container), over-mounted and doubly mounted hierarchies; inputs the
// kernel cannot print (two mounts with one ID, a relative mountpoint, root
// or cgroup path, a controller on two lines) are skipped. Find's path
// resolution may evaluate symlinks on this machine (read-only); everything
// else is computed.
func FuzzFindMounts(f *testing.F) {
	f.Fuzz(func(t *testing.T, mi, self, init []byte, cgroupsPath string, systemd bool, statePaths []byte) {
		infos, err := mountinfo.GetMountsFromReader(bytes.NewReader(mi), nil)
		if err != nil || !kernelMountinfo(infos) {
			return
		}
		selfPaths, err := parseProcCgroup(self)
		if err != nil {
			return
		}
		initPaths, err := parseProcCgroup(init)
		if err != nil || !kernelProcCgroup(selfPaths) || !kernelProcCgroup(initPaths) {
			return
		}
		tab := &table{
			mounts: mountsFrom(infos, selfPaths),
			guarded: []guarded{
				{pid: os.Getpid(), what: "the calling process", paths: selfPaths},
				{pid: 1, what: "init (pid 1)", paths: initPaths},
			},
		}
		ev := Evidence{CgroupsPath: cgroupsPath, Systemd: systemd, StatePaths: fuzzStatePaths(statePaths)}
		set, errs := tab.find(ev)
		if set == nil {
			t.Fatal("find returned a nil set")
		}
		assertLowercase(t, errs)
		assertSafeDirs(t, set.Dirs, cgroupMountsOf(infos), func(d string) *hostMount { return visibleMount(infos, d) },
			map[string]map[string]string{"the calling process": selfPaths, "pid 1": initPaths})
		for i, d := range set.dirs {
			v := tab.visible(d.path)
			if v == nil || !v.cgroup {
				t.Errorf("dir %s: the mount it resolves into is not a cgroup mount (%+v)", d.path, v)
				continue
			}
			if want := path.Join(v.root, strings.TrimPrefix(d.path, v.mountpoint)); d.cg != want || want == "/" {
				t.Errorf("dir %s: cgroup %q, want %q through mount %s (root %s)", d.path, d.cg, want, v.mountpoint, v.root)
			}
			if d.path != set.Dirs[i] {
				t.Errorf("set.dirs[%d] = %s, Dirs[%d] = %s", i, d.path, i, set.Dirs[i])
			}
		}
	})
}

// FuzzParseStat checks the parse of /proc/<pid>/stat (package procstat,
// which this package reads it through), whose comm field a
// container's process sets to anything (up to 15 bytes, any but NUL,
// parentheses, spaces and newlines included): the start time read from a
// line is the one the kernel wrote, whatever the comm, so a process cannot
// pass for another one by its name. Any raw input parses or fails without
// panicking.
func FuzzParseStat(f *testing.F) {
	const states = "RSDZTtXxIKWPN"
	f.Fuzz(func(t *testing.T, raw, comm []byte, state byte, flags, start uint64) {
		_, _ = procstat.Parse(raw)
		if len(comm) > 15 || bytes.IndexByte(comm, 0) >= 0 {
			return
		}
		st := states[int(state)%len(states)]
		// The kernel's format: pid (comm) state ppid pgrp session tty_nr
		// tpgid flags minflt ... starttime (field 22) ...
		line := fmt.Sprintf("4242 (%s) %c 1 4242 4242 0 -1 %d 100 0 0 0 1 2 0 0 20 0 1 0 %d 1234567 89 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
			comm, st, flags, start)
		got, err := procstat.Parse([]byte(line))
		if err != nil {
			t.Fatalf("procstat.Parse(%q): %v", line, err)
		}
		if got.State != st || got.Start != start || got.Flags != flags || got.PPid != 1 || got.Threads != 1 {
			t.Fatalf("procstat.Parse(%q) = %+v; want state %c, ppid 1, flags %d, threads 1, start %d", line, got, st, flags, start)
		}
	})
}

// FuzzParseProcCgroup: any /proc/<pid>/cgroup content parses or fails
// without panicking, and a parsed one gives back every line's path.
func FuzzParseProcCgroup(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseProcCgroup(data)
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line == "" {
				continue
			}
			parts := strings.SplitN(line, ":", 3)
			if _, ok := m[parts[1]]; !ok {
				t.Errorf("line %q: controllers %q missing from %v", line, parts[1], m)
			}
		}
	})
}

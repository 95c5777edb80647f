package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/mounttable"
)

// dirInfo is one resolved, validated cgroup directory.
type dirInfo struct {
	path string // absolute directory, strictly below a cgroup mount
	key  string // hierarchy: "" for cgroup2, else the v1 controllers field of /proc/<pid>/cgroup ("memory", "cpu,cpuacct", "name=systemd")
	v2   bool   // on a cgroup2 filesystem
	cg   string // cgroup path inside the hierarchy, as /proc/<pid>/cgroup shows it
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	id         int
	mountpoint string
	root       string
	cgroup     bool // fstype cgroup or cgroup2
	v2         bool
	key        string // hierarchy key (see dirInfo.key); "" for v2 and non-cgroup mounts
	keyOK      bool   // key matched a line of /proc/self/cgroup (always true for v2)
}

// guarded is a process whose cgroups must never be touched.
type guarded struct {
	pid   int
	what  string
	paths map[string]string // hierarchy key -> cgroup path
}

// table is a snapshot of the mounts and of the guarded processes' cgroups.
type table struct {
	mounts  []mountEntry // every mount, in mountinfo order
	guarded []guarded    // guarded[0] is the calling process
}

type guardPid struct {
	pid  int
	what string
}

// guardedPids returns the pids whose cgroups are protected: the calling
// process, its parent (containerd runs the delete command) and pid 1.
func guardedPids() []guardPid {
	g := []guardPid{{os.Getpid(), "the calling process"}}
	if pp := os.Getppid(); pp > 1 {
		g = append(g, guardPid{pp, fmt.Sprintf("the parent process (pid %d)", pp)})
	}
	return append(g, guardPid{1, "init (pid 1)"})
}

// loadTable takes the mounts from mt (nil: mountinfo read now) and reads
// the guarded processes' cgroups.
func loadTable(mt *mounttable.Table) (*table, error) {
	if mt == nil {
		var err error
		if mt, err = mounttable.Read(); err != nil {
			return nil, err
		}
	}
	t, err := guardedNow()
	if err != nil {
		return nil, err
	}
	t.mounts = mountsFrom(mt.All(), t.guarded[0].paths)
	return t, nil
}

// mountsFrom converts mountinfo entries, naming each cgroup mount's
// hierarchy after the matching line of the calling process's cgroup file.
func mountsFrom(infos []*mountinfo.Info, self map[string]string) []mountEntry {
	ms := make([]mountEntry, 0, len(infos))
	for _, in := range infos {
		m := mountEntry{id: in.ID, mountpoint: filepath.Clean(in.Mountpoint), root: in.Root}
		switch in.FSType {
		case "cgroup2":
			m.cgroup, m.v2, m.keyOK = true, true, true
		case "cgroup":
			m.cgroup = true
			m.key, m.keyOK = v1Key(in.VFSOptions, self)
		}
		ms = append(ms, m)
	}
	return ms
}

// v1Key finds the /proc/self/cgroup controllers field whose every item is
// one of a v1 mount's super options ("rw,cpu,cpuacct" -> "cpu,cpuacct").
func v1Key(superOpts string, self map[string]string) (string, bool) {
	opts := map[string]bool{}
	for _, o := range strings.Split(superOpts, ",") {
		opts[o] = true
	}
	for k := range self {
		if k == "" {
			continue
		}
		all := true
		for _, c := range strings.Split(k, ",") {
			if !opts[c] {
				all = false
				break
			}
		}
		if all {
			return k, true
		}
	}
	return "", false
}

// visible returns the mount that path resolves into: the one with the
// longest mountpoint prefix, the last (topmost) of equal ones.
func (t *table) visible(p string) *mountEntry {
	var best *mountEntry
	for i := range t.mounts {
		m := &t.mounts[i]
		if !under(p, m.mountpoint) {
			continue
		}
		if best == nil || len(m.mountpoint) >= len(best.mountpoint) {
			best = m
		}
	}
	return best
}

// under reports whether p is dir or lies below it (both clean and absolute).
func under(p, dir string) bool {
	return dir == "/" || p == dir || strings.HasPrefix(p, dir+"/")
}

// hasDotDot reports whether p has a ".." component.
func hasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}

// classify maps an absolute directory onto the cgroup mount it lies in and
// checks it is safe to act on.
func (t *table) classify(dir string) (dirInfo, error) {
	d, err := t.locate(dir)
	if err != nil {
		return dirInfo{}, err
	}
	return d, t.check(d)
}

// locate maps an absolute directory onto the cgroup mount it lies in,
// rejecting paths outside cgroup mounts and a mount's root directory.
func (t *table) locate(dir string) (dirInfo, error) {
	if dir == "" {
		return dirInfo{}, errors.New("empty path")
	}
	if strings.ContainsRune(dir, 0) {
		return dirInfo{}, fmt.Errorf("%q: contains a NUL byte", dir)
	}
	if !filepath.IsAbs(dir) {
		return dirInfo{}, fmt.Errorf("%q: not an absolute path", dir)
	}
	if hasDotDot(dir) {
		return dirInfo{}, fmt.Errorf("%q: contains \"..\"", dir)
	}
	p := filepath.Clean(dir)
	m := t.visible(p)
	if m == nil || !m.cgroup {
		// /sys/fs/cgroup/cpu may be a symlink to cpu,cpuacct: resolve the
		// part that exists and look again.
		if r, err := resolveExisting(p); err == nil && r != p {
			p = r
			m = t.visible(p)
		}
	}
	if m == nil || !m.cgroup {
		return dirInfo{}, fmt.Errorf("%s: not inside a mounted cgroup filesystem", p)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(p, m.mountpoint), "/")
	if rel == "" {
		return dirInfo{}, fmt.Errorf("%s: is the root of a cgroup mount", p)
	}
	if !m.keyOK {
		return dirInfo{}, fmt.Errorf("%s: cannot tell which hierarchy it belongs to", p)
	}
	if outsideNamespace(m) {
		return dirInfo{}, fmt.Errorf("%s: its cgroup mount %s (root %s) lies outside this process's cgroup namespace: cannot tell which cgroups it holds", p, m.mountpoint, m.root)
	}
	return dirInfo{path: p, key: m.key, v2: m.v2, cg: path.Join(m.root, rel)}, nil
}

// outsideNamespace reports whether a cgroup mount's root has a ".."
// component: the mount was made outside the calling process's cgroup
// namespace (e.g. the host's /sys/fs/cgroup bind-mounted into a container
// with a private cgroup namespace). mountinfo and /proc/<pid>/cgroup show
// paths relative to the namespace's root, whose own path is unknown here,
// so a directory of such a mount cannot be placed relative to the guarded
// processes' cgroups: path.Join(root, rel) drops the "..", and the
// namespace's root itself (the caller's own cgroup, "/" in its
// /proc/self/cgroup) would pass for "/<its name>".
func outsideNamespace(m *mountEntry) bool { return hasDotDot(m.root) }

// resolveExisting evaluates symlinks in the longest existing prefix of p.
func resolveExisting(p string) (string, error) {
	rest := ""
	for cur := p; ; cur = filepath.Dir(cur) {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest), nil
		}
		if cur == "/" {
			return "", fmt.Errorf("resolve %s: nothing exists", p)
		}
		rest = filepath.Join(filepath.Base(cur), rest)
	}
}

// check rejects a hierarchy's root cgroup and any cgroup that holds, or is
// an ancestor of the cgroup of, a guarded process.
func (t *table) check(d dirInfo) error {
	if d.cg == "/" || d.cg == "" {
		return fmt.Errorf("%s: is the root cgroup of its hierarchy", d.path)
	}
	for i, g := range t.guarded {
		own, ok := g.paths[d.key]
		if !ok {
			if i == 0 {
				return fmt.Errorf("%s: cannot tell whether it holds the calling process", d.path)
			}
			continue
		}
		if own == d.cg {
			return fmt.Errorf("%s: holds %s", d.path, g.what)
		}
		if strings.HasPrefix(own, strings.TrimSuffix(d.cg, "/")+"/") {
			return fmt.Errorf("%s: is an ancestor of the cgroup of %s", d.path, g.what)
		}
	}
	return nil
}

// mapCgroup maps a cgroup path onto every mounted hierarchy: cgFor gives the
// path for a hierarchy key (false: none). Each hierarchy is reached through
// its first mount whose root holds the path strictly below the mountpoint.
// Hierarchies that cannot reach the path are skipped silently; rejected
// candidates are returned as errors.
func (t *table) mapCgroup(cgFor func(key string, v2 bool) (string, bool)) ([]dirInfo, []error) {
	var (
		out  []dirInfo
		errs []error
		done = map[string]bool{}
	)
	for i := range t.mounts {
		m := &t.mounts[i]
		if !m.cgroup || !m.keyOK || done[m.key] || outsideNamespace(m) {
			continue
		}
		cg, ok := cgFor(m.key, m.v2)
		if !ok {
			continue
		}
		if cg == "/" {
			done[m.key] = true
			errs = append(errs, fmt.Errorf("cgroup %q: is the root cgroup of hierarchy %q", cg, hierName(m.key)))
			continue
		}
		if !under(cg, m.root) || cg == m.root {
			continue // not reachable through this mount; maybe another one
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(cg, m.root), "/")
		p := filepath.Join(m.mountpoint, rel)
		if v := t.visible(p); v == nil || v.id != m.id {
			continue // over-mounted
		}
		done[m.key] = true
		d := dirInfo{path: p, key: m.key, v2: m.v2, cg: cg}
		if err := t.check(d); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, d)
	}
	return out, errs
}

func hierName(key string) string {
	if key == "" {
		return "cgroup2"
	}
	return key
}

// find is Find against a given table.
//
// A cgroup path is all or nothing: runc uses one path in every hierarchy,
// so a path that is refused in one hierarchy (it holds, or is an ancestor
// of the cgroup of, a guarded process) is not a container's and is dropped
// from every hierarchy, state directories included.
func (t *table) find(ev Evidence) (*Set, []error) {
	var (
		s        = &Set{}
		errs     []error
		seen     = map[string]bool{}
		poisoned = map[string]bool{} // cgroup paths refused somewhere
		groups   [][]dirInfo         // candidates, in order of preference
	)

	keys := make([]string, 0, len(ev.StatePaths))
	for k := range ev.StatePaths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var fromState []dirInfo
	for _, k := range keys {
		d, err := t.locate(ev.StatePaths[k])
		if err == nil {
			if err = t.check(d); err != nil {
				poisoned[d.cg] = true
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("state cgroup path for %q: %w", hierName(k), err))
			continue
		}
		fromState = append(fromState, d)
	}
	groups = append(groups, fromState)
	// The same cgroup path in every other hierarchy belongs to the
	// container too.
	for _, d := range fromState {
		cg := d.cg
		ds, es := t.mapCgroup(func(string, bool) (string, bool) { return cg, true })
		for _, e := range es {
			errs = append(errs, fmt.Errorf("state cgroup path %s in other hierarchies: %w", d.path, e))
		}
		if len(es) > 0 {
			poisoned[cg] = true
		}
		groups = append(groups, ds)
	}

	if ev.CgroupsPath != "" {
		cg, relative, err := parseCgroupsPath(ev.CgroupsPath, ev.Systemd)
		if err != nil {
			errs = append(errs, err)
		} else if relative {
			// runc resolved it against its own cgroup when it created the
			// container (the shim's, v1; its parent, v2), which nothing
			// here records: against the caller's (an operator's shell, the
			// gc service) it could name anyone's cgroup.
			errs = append(errs, fmt.Errorf("cgroupsPath %q: relative: runc resolved it against the cgroup of the shim that created the container, which is not known: not used", ev.CgroupsPath))
		} else {
			ds, es := t.mapCgroup(func(string, bool) (string, bool) { return cg, true })
			for _, e := range es {
				errs = append(errs, fmt.Errorf("cgroupsPath %q: %w", ev.CgroupsPath, e))
			}
			switch {
			case len(es) == 0 && len(ds) == 0:
				errs = append(errs, fmt.Errorf("cgroupsPath %q: not reachable through any mounted cgroup hierarchy", ev.CgroupsPath))
			case len(es) == 0:
				groups = append(groups, ds)
			case len(ds) > 0:
				errs = append(errs, fmt.Errorf("cgroupsPath %q: dropped from every hierarchy", ev.CgroupsPath))
			}
		}
	}

	dropped := map[string]bool{}
	for _, g := range groups {
		for _, d := range g {
			if poisoned[d.cg] {
				if !dropped[d.path] {
					dropped[d.path] = true
					errs = append(errs, fmt.Errorf("cgroup %s: refused: its cgroup path %s is refused in another hierarchy", d.path, d.cg))
				}
				continue
			}
			id := d.key + "\x00" + d.cg
			if seen[id] || seen["\x00path"+d.path] {
				continue
			}
			seen[id], seen["\x00path"+d.path] = true, true
			s.Dirs = append(s.Dirs, d.path)
			s.dirs = append(s.dirs, d)
		}
	}
	return s, errs
}

// parseCgroupsPath turns the spec's cgroupsPath into a cgroup path inside a
// hierarchy. relative is true for a relative cgroupfs path (runc's base for
// it was its own cgroup at create time; cg is then relative too).
func parseCgroupsPath(p string, systemd bool) (cg string, relative bool, err error) {
	if strings.ContainsRune(p, 0) {
		return "", false, fmt.Errorf("cgroupsPath %q: contains a NUL byte", p)
	}
	if systemd || (strings.Count(p, ":") == 2 && !strings.Contains(p, "/")) {
		cg, err := systemdPath(p)
		if err != nil {
			return "", false, fmt.Errorf("cgroupsPath %q: %w", p, err)
		}
		return cg, false, nil
	}
	if hasDotDot(p) {
		return "", false, fmt.Errorf("cgroupsPath %q: contains \"..\"", p)
	}
	c := path.Clean("/" + p)
	if c == "/" {
		return "", false, fmt.Errorf("cgroupsPath %q: names the root cgroup", p)
	}
	if strings.HasPrefix(p, "/") {
		return c, false, nil
	}
	return strings.TrimPrefix(c, "/"), true, nil
}

// systemdPath expands "slice:prefix:name" the way runc's systemd drivers do:
// an empty slice is system.slice; a name ending in ".slice" is the unit
// itself, else the unit is "prefix-name.scope".
func systemdPath(p string) (string, error) {
	parts := strings.Split(p, ":")
	if len(parts) != 3 {
		return "", errors.New("systemd cgroupsPath must be \"slice:prefix:name\"")
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	sp, err := expandSlice(slice)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("empty unit name")
	}
	for _, s := range []string{prefix, name} {
		if strings.Contains(s, "/") || s == "." || s == ".." {
			return "", fmt.Errorf("invalid unit name part %q", s)
		}
	}
	unit := prefix + "-" + name + ".scope"
	if strings.HasSuffix(name, ".slice") {
		unit = name
	}
	return path.Join(sp, unit), nil
}

// expandSlice is runc's systemd ExpandSlice: "a-b-c.slice" ->
// "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	if len(slice) < len(suffix) || !strings.HasSuffix(slice, suffix) || strings.Contains(slice, "/") {
		return "", fmt.Errorf("invalid slice name %q", slice)
	}
	name := strings.TrimSuffix(slice, suffix)
	if name == "-" {
		return "/", nil
	}
	var p, prefix string
	for _, c := range strings.Split(name, "-") {
		if c == "" {
			return "", fmt.Errorf("invalid slice name %q", slice)
		}
		p += "/" + prefix + c + suffix
		prefix += c + "-"
	}
	return p, nil
}

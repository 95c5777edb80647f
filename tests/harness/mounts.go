package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// mountEntry is one line of a mountinfo file.
type mountEntry struct {
	Root       string // root of the mount within its filesystem
	MountPoint string
	FSType     string
	SuperOpts  string
}

// readMountinfo parses /proc/<pid>/mountinfo ("self" when pid is 0).
func readMountinfo(pid int) ([]mountEntry, error) {
	name := "/proc/self/mountinfo"
	if pid > 0 {
		name = fmt.Sprintf("/proc/%d/mountinfo", pid)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, s := range f {
			if s == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(f) < sep+4 {
			continue
		}
		out = append(out, mountEntry{
			Root:       unescapeMount(f[3]),
			MountPoint: unescapeMount(f[4]),
			FSType:     f[sep+1],
			SuperOpts:  f[sep+3],
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// under reports whether p is dir or lies below it.
func under(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// MountsUnder returns the mount points at or below any of dirs, as seen by
// the mount namespaces of pids (0 = this process), deepest first, without
// duplicates. A pid whose mountinfo cannot be read (gone) is passed over.
func MountsUnder(pids []int, dirs ...string) []string {
	seen := map[string]bool{}
	for _, pid := range pids {
		ms, err := readMountinfo(pid)
		if err != nil {
			continue
		}
		for _, m := range ms {
			for _, d := range dirs {
				if d != "" && under(m.MountPoint, d) {
					seen[m.MountPoint] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) > len(out[j])
		}
		return out[i] < out[j]
	})
	return out
}

// cgroupLine is one line of /proc/<pid>/cgroup.
type cgroupLine struct {
	ID          string // hierarchy id; "0" for cgroup2
	Controllers string // "cpu,cpuacct", "name=systemd", "" for cgroup2
	Path        string
}

func readProcCgroup(pid int) ([]cgroupLine, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	var out []cgroupLine
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		out = append(out, cgroupLine{ID: parts[0], Controllers: parts[1], Path: parts[2]})
	}
	return out, nil
}

// hierarchyMount finds, in this process's mount namespace, the mount of the
// hierarchy that line names: the cgroup2 mount for "0::", else the v1 mount
// whose super options carry exactly its controllers.
func hierarchyMount(ms []mountEntry, line cgroupLine) (mountEntry, bool) {
	for _, m := range ms {
		if line.ID == "0" {
			if m.FSType == "cgroup2" {
				return m, true
			}
			continue
		}
		if m.FSType != "cgroup" {
			continue
		}
		opts := map[string]bool{}
		for _, o := range strings.Split(m.SuperOpts, ",") {
			opts[o] = true
		}
		all := true
		for _, c := range strings.Split(line.Controllers, ",") {
			if !opts[c] {
				all = false
			}
		}
		if all {
			return m, true
		}
	}
	return mountEntry{}, false
}

// ContainerCgroups returns, in every hierarchy mounted in this process's
// mount namespace, the directory of pid's cgroup where it differs from the
// cgroup of ref (the shim): those are the directories runc created for the
// container.
func ContainerCgroups(pid, ref int) ([]string, error) {
	mine, err := readProcCgroup(pid)
	if err != nil {
		return nil, err
	}
	theirs, err := readProcCgroup(ref)
	if err != nil {
		return nil, fmt.Errorf("cgroups of shim %d: %w", ref, err)
	}
	refPath := map[string]string{}
	for _, l := range theirs {
		refPath[l.ID+":"+l.Controllers] = l.Path
	}
	ms, err := readMountinfo(0)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, l := range mine {
		if l.Path == refPath[l.ID+":"+l.Controllers] {
			continue
		}
		m, ok := hierarchyMount(ms, l)
		if !ok {
			continue
		}
		rel := l.Path
		if m.Root != "/" {
			if !under(rel, m.Root) {
				continue
			}
			rel = strings.TrimPrefix(rel, m.Root)
		}
		dirs = append(dirs, filepath.Join(m.MountPoint, rel))
	}
	sort.Strings(dirs)
	return dirs, nil
}

// CgroupPids returns the pids listed in cgroup.procs of dir and of every
// cgroup below it.
func CgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return nil
	})
	return pids
}

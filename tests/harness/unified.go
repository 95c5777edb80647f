package harness

import "golang.org/x/sys/unix"

// UnifiedRoot is where this machine mounts the unified cgroup v2
// hierarchy: /sys/fs/cgroup on a cgroup v2 host (the production node),
// /sys/fs/cgroup/unified on a hybrid one, "" where there is none.
func UnifiedRoot() string {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p
		}
	}
	return ""
}

package cgroups

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/procstat"
)

// errGone says a process no longer exists (or is a zombie).
var errGone = errors.New("process is gone")

// readProcCgroup parses /proc/<pid>/cgroup into hierarchy key -> cgroup
// path: "" for the cgroup2 line "0::/path", else the v1 controllers field
// ("memory", "cpu,cpuacct", "name=systemd"). A missing process is errGone.
func readProcCgroup(pid int) (map[string]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, errGone)
		}
		return nil, fmt.Errorf("read cgroups of pid %d: %w", pid, err)
	}
	return parseProcCgroup(data)
}

func parseProcCgroup(data []byte) (map[string]string, error) {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		// hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("parse cgroup line %q: want id:controllers:path", line)
		}
		out[parts[1]] = parts[2]
	}
	return out, nil
}

// procDying reports whether every thread of process pid is dying (see
// procstat.Stat.Dying); a process that is gone counts as dying. The main
// thread alone does not tell: it may have exited (state Z, PF_EXITING)
// while other threads run.
func procDying(pid int) bool {
	tids, err := threads(pid)
	if err != nil {
		st, err := readStat(pid)
		return err != nil || st.Dying()
	}
	for _, tid := range tids {
		st, err := procstat.ReadTask(pid, tid)
		if err == nil && !st.Dying() {
			return false
		}
	}
	return true
}

// threads lists the thread ids of process pid (/proc/<pid>/task).
func threads(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// readThreadCgroups returns the cgroups of each live thread of pid other
// than the main thread, from /proc/<pid>/task/<tid>/cgroup. It is what
// places a process whose main thread has exited: on cgroup v1 the kernel
// shows an exiting task in the root cgroup of every v1 hierarchy.
func readThreadCgroups(pid int) []map[string]string {
	tids, err := threads(pid)
	if err != nil {
		return nil
	}
	var out []map[string]string
	for _, tid := range tids {
		if tid == pid {
			continue
		}
		if st, err := procstat.ReadTask(pid, tid); err != nil || st.Dying() {
			continue
		}
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/cgroup")
		if err != nil {
			continue
		}
		if paths, err := parseProcCgroup(data); err == nil {
			out = append(out, paths)
		}
	}
	return out
}

// readStat reads /proc/<pid>/stat (package procstat). A missing process
// is errGone.
func readStat(pid int) (procstat.Stat, error) {
	st, err := procstat.Read(pid)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return procstat.Stat{}, fmt.Errorf("read stat of pid %d: %w", pid, errGone)
	}
	return st, err
}

// procOfThread returns the process (thread group) thread tid belongs to:
// the Tgid line of /proc/<tid>/status (a thread id that is not a process's
// is not listed in /proc, but its directory is there). A thread that is
// gone is errGone.
func procOfThread(tid int) (int, error) {
	p := "/proc/" + strconv.Itoa(tid) + "/status"
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return 0, fmt.Errorf("read %s: %w", p, errGone)
		}
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || pid <= 0 {
				return 0, fmt.Errorf("%s: bad Tgid %q", p, v)
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("%s: no Tgid line", p)
}

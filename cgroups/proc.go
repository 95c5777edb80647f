package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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

// procStat is what is read from /proc/<pid>/stat.
type procStat struct {
	state     byte   // field 3
	flags     uint64 // field 9, the kernel's PF_* flags
	startTime uint64 // field 22, clock ticks since boot
}

// pfExiting is the kernel's PF_EXITING: the task is in do_exit and will
// never run user code again.
const pfExiting = 0x00000004

// exited reports a zombie or dead task. For a process's main thread this
// does not mean the process has exited: its other threads may still run
// (see pidfdExited).
func (s procStat) exited() bool { return s.state == 'Z' || s.state == 'X' || s.state == 'x' }

// dying reports a task that has exited or is exiting: past the point of
// no return in do_exit, it holds no cgroup and runs no code. A pid
// namespace's init stays there until every process of its namespace is
// reaped, and one whose parent is outside the namespace (an exec'd process
// of a dead shim) is reaped only when the host's init gets to it.
func (s procStat) dying() bool { return s.exited() || s.flags&pfExiting != 0 }

// procDying reports whether every thread of process pid is dying (see
// procStat.dying); a process that is gone counts as dying. The main
// thread alone does not tell: it may have exited (state Z, PF_EXITING)
// while other threads run.
func procDying(pid int) bool {
	tids, err := threads(pid)
	if err != nil {
		st, err := readStat(pid)
		return err != nil || st.dying()
	}
	for _, tid := range tids {
		st, err := readTaskStat(pid, tid)
		if err == nil && !st.dying() {
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

// readTaskStat reads /proc/<pid>/task/<tid>/stat.
func readTaskStat(pid, tid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of thread %d of pid %d: %w", tid, pid, err)
	}
	st, err := parseStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("parse stat of thread %d of pid %d: %w", tid, pid, err)
	}
	return st, nil
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
		if st, err := readTaskStat(pid, tid); err != nil || st.dying() {
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

// readStat reads /proc/<pid>/stat. A missing process is errGone.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return procStat{}, fmt.Errorf("read stat of pid %d: %w", pid, errGone)
		}
		return procStat{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	st, err := parseStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("parse stat of pid %d: %w", pid, err)
	}
	return st, nil
}

// parseStat parses a /proc/<pid>/stat line. comm (field 2) may hold spaces
// and parentheses, so the fields are split after the last ')'.
func parseStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("no ')' after comm")
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 22-2 {
		return procStat{}, fmt.Errorf("%d fields after comm, want at least %d", len(fields), 22-2)
	}
	if len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("bad state %q", fields[0])
	}
	flags, err := strconv.ParseUint(fields[9-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("bad flags: %w", err)
	}
	start, err := strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("bad start time: %w", err)
	}
	return procStat{state: fields[0][0], flags: flags, startTime: start}, nil
}

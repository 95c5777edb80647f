package liveness

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is what the liveness checks read from /proc/<pid>/stat.
type Stat struct {
	State byte
	PPid  int
	// Threads is field 20, the number of threads; a zombie main thread
	// is counted until the process is reaped.
	Threads int
	Start   uint64 // field 22, clock ticks since boot, as runc records it
}

// Exited reports a zombie or a dead process. A process whose main thread
// exited while other threads run shows "Z" too, but has more than one
// thread: it has not exited.
func (s Stat) Exited() bool {
	return (s.State == 'Z' || s.State == 'X' || s.State == 'x') && s.Threads <= 1
}

// ReadStat parses /proc/<pid>/stat; the comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return Stat{}, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: ppid: %w", pid, err)
	}
	threads, err := strconv.Atoi(f[17])
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: threads: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: start time: %w", pid, err)
	}
	return Stat{State: f[0][0], PPid: ppid, Threads: threads, Start: start}, nil
}

// procCmdline is /proc/<pid>/cmdline split at NULs.
func procCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

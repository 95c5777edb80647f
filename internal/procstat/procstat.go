package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is what is read from /proc/<pid>/stat (or a thread's
// /proc/<pid>/task/<tid>/stat).
type Stat struct {
	// State is field 3: R, S, D, Z, T, t, X, x, I, ...
	State byte
	// PPid is field 4, the parent's pid (0 for pid 1 and kernel threads).
	PPid int
	// Flags is field 9, the kernel's PF_* flags (see PFExiting).
	Flags uint64
	// Threads is field 20, the number of threads; a zombie main thread
	// is counted until the process is reaped.
	Threads int
	// Start is field 22, the start time in clock ticks since boot, as
	// runc records it for the container's init.
	Start uint64
}

// PFExiting is the kernel's PF_EXITING: the task is in do_exit and will
// never run user code again.
const PFExiting = 0x00000004

// Zombie reports a task (a thread, or a process's main thread) that has
// exited: state Z, X or x. For a process's main thread this does not mean
// the process has exited: its other threads may still run (see Exited).
func (s Stat) Zombie() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// Exited reports a process that is a zombie or dead. A process whose main
// thread exited while other threads run shows "Z" too, but has more than
// one thread: it has not exited.
func (s Stat) Exited() bool { return s.Zombie() && s.Threads <= 1 }

// Dying reports a task that has exited or is exiting (Zombie, or
// PFExiting set): past the point of no return in do_exit, it holds no
// cgroup and runs no code. It says nothing of the process's other threads.
func (s Stat) Dying() bool { return s.Zombie() || s.Flags&PFExiting != 0 }

// Read reads and parses /proc/<pid>/stat. A missing process returns an
// error wrapping fs.ErrNotExist (or ESRCH, which a read of a process
// reaped after the open gives).
func Read(pid int) (Stat, error) {
	return read("/proc/"+strconv.Itoa(pid)+"/stat", fmt.Sprintf("pid %d", pid))
}

// ReadTask reads and parses /proc/<pid>/task/<tid>/stat, the stat of
// thread tid of process pid. A missing thread returns an error wrapping
// fs.ErrNotExist (or ESRCH).
func ReadTask(pid, tid int) (Stat, error) {
	return read("/proc/"+strconv.Itoa(pid)+"/task/"+strconv.Itoa(tid)+"/stat", fmt.Sprintf("thread %d of pid %d", tid, pid))
}

func read(path, what string) (Stat, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, fmt.Errorf("read stat of %s: %w", what, err)
	}
	st, err := Parse(data)
	if err != nil {
		return Stat{}, fmt.Errorf("parse stat of %s: %w", what, err)
	}
	return st, nil
}

// Parse parses a /proc/<pid>/stat line. The fields are split after the
// last ')', which ends comm; the line must go on to at least field 22
// (the start time), the state must be one character, and the parent,
// flags, thread count and start time must be decimal numbers.
func Parse(data []byte) (Stat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Stat{}, errors.New("no ')' after comm")
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	field := func(n int) string { return fields[n-3] }
	if len(fields) < 22-2 {
		return Stat{}, fmt.Errorf("%d fields after comm, want at least %d", len(fields), 22-2)
	}
	if len(field(3)) != 1 {
		return Stat{}, fmt.Errorf("bad state %q", field(3))
	}
	ppid, err := strconv.Atoi(field(4))
	if err != nil {
		return Stat{}, fmt.Errorf("bad ppid: %w", err)
	}
	flags, err := strconv.ParseUint(field(9), 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("bad flags: %w", err)
	}
	threads, err := strconv.Atoi(field(20))
	if err != nil {
		return Stat{}, fmt.Errorf("bad thread count: %w", err)
	}
	start, err := strconv.ParseUint(field(22), 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("bad start time: %w", err)
	}
	return Stat{State: field(3)[0], PPid: ppid, Flags: flags, Threads: threads, Start: start}, nil
}

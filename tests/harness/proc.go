package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is one process recorded by pid and start time (field 22 of
// /proc/<pid>/stat, clock ticks since boot), so that a reused pid is never
// taken for the recorded process.
type Proc struct {
	Pid   int
	Start uint64
	Comm  string
}

func (p Proc) String() string { return fmt.Sprintf("%d(%s)", p.Pid, p.Comm) }

// procStat is the part of /proc/<pid>/stat the harness uses.
type procStat struct {
	Comm  string
	State byte
	PPid  int
	Start uint64
}

// readStat parses /proc/<pid>/stat. The comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("stat of pid %d: malformed %q", pid, data)
	}
	rest := strings.Fields(string(data[end+1:]))
	// rest[0] is field 3 (state); field 22 (starttime) is rest[19].
	if len(rest) < 20 {
		return procStat{}, fmt.Errorf("stat of pid %d: %d fields after comm", pid, len(rest))
	}
	start, err := strconv.ParseUint(rest[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: start time: %w", pid, err)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return procStat{}, fmt.Errorf("stat of pid %d: ppid: %w", pid, err)
	}
	return procStat{Comm: string(data[open+1 : end]), State: rest[0][0], PPid: ppid, Start: start}, nil
}

// RecordProc records pid with its current start time.
func RecordProc(pid int) (Proc, error) {
	st, err := readStat(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{Pid: pid, Start: st.Start, Comm: st.Comm}, nil
}

// Alive reports whether the recorded process still runs: its pid exists with
// the recorded start time and it is not a zombie.
//
// A zombie (state Z, or X while being reaped) counts as gone: on this
// machine PID 1 does not reap orphans, so a container process whose shim died
// and that was then SIGKILLed stays a zombie forever although it has exited
// and released everything but its pid.
func (p Proc) Alive() bool {
	alive, _ := p.probe()
	return alive
}

// probe is Alive that tells a process that is gone (its /proc/<pid>/stat
// missing: ENOENT, or ESRCH while it is being reaped) from one that could
// not be looked at: any other error reading or parsing its stat is
// returned, with alive false.
func (p Proc) probe() (alive bool, err error) {
	st, err := readProcStat(p.Pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return false, nil
		}
		return false, err
	}
	if st.Start != p.Start {
		return false, nil // the pid was reused by another process
	}
	return st.State != 'Z' && st.State != 'X', nil
}

// readProcStat is the probe of a process's stat that Residue uses; a
// variable so that a test can make it fail as EACCES or EIO would.
var readProcStat = readStat

// Kill sends SIGKILL to the recorded process through a pidfd opened before
// its start time is checked, so a reused pid is never signalled. A process
// that is gone (or a zombie) is success.
func (p Proc) Kill() error {
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("pidfd_open %d: %w", p.Pid, err)
	}
	defer unix.Close(fd)
	if !p.Alive() {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %s: %w", p, err)
	}
	return nil
}

// WaitGone polls until none of procs is Alive or ctx is done; it returns the
// ones still alive.
func WaitGone(ctx context.Context, procs []Proc) []Proc {
	for {
		var alive []Proc
		for _, p := range procs {
			if p.Alive() {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return alive
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Poll calls cond every interval until it returns true or timeout passes; it
// reports whether cond became true. It is the one bounded wait of the
// harness: nothing sleeps and hopes.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

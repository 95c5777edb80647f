package harness

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// StartReaper makes the calling process a child subreaper that reaps the
// orphans it adopts, as a host's init does: shims daemonize, so they (and,
// once a shim dies, its container's processes) are re-parented to the
// nearest subreaper. Without one they go to PID 1, which on some machines
// (these among them) reaps only every couple of seconds; a pid namespace's
// init cannot finish exiting while a zombie of its namespace waits for a
// parent outside it, so every delete would then wait on PID 1.
//
// Children this process started itself (os/exec) are never reaped here:
// Go holds a pidfd for each until its Wait, and a zombie child with a pidfd
// open in this process is left to that Wait. The returned stop ends the
// reaping; the process stays a subreaper.
func StartReaper() (stop func(), err error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// SIGCHLD can coalesce, and a child may turn zombie after a
		// scan: a slow tick catches what the signal missed.
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			reapAdopted()
			select {
			case <-done:
				return
			case <-sigs:
			case <-tick.C:
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}, nil
}

// reapAdopted reaps every zombie child that this process did not start.
func reapAdopted() {
	zombies := zombieChildren()
	if len(zombies) == 0 {
		return
	}
	own := ownPidfds()
	for _, pid := range zombies {
		if own[pid] {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// zombieChildren lists this process's children (of every thread) that are
// zombies.
func zombieChildren() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var out []int
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(field)
			if err != nil {
				continue
			}
			if st, err := readStat(pid); err == nil && st.State == 'Z' {
				out = append(out, pid)
			}
		}
	}
	return out
}

// ownPidfds returns the pids of the pidfds this process holds open.
func ownPidfds() map[int]bool {
	out := map[int]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return out
	}
	for _, fd := range fds {
		target, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err != nil || !strings.Contains(target, "pidfd") {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					out[pid] = true
				}
			}
		}
	}
	return out
}

package cgroups

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// pollChunk bounds one poll(2) so that a cancelled ctx is noticed quickly;
// exits still wake the poll at once.
const pollChunk = 10 * time.Millisecond

// dyingGrace is how long a process that is past the point of no return in
// do_exit may take to finish exiting before it counts as gone: a pid
// namespace's init finishes only once its namespace's last zombie is
// reaped, which may be up to the host's init.
const dyingGrace = 100 * time.Millisecond

// pidfdOpen opens a pidfd for pid. A missing process is errGone.
//
// No flag is passed: PIDFD_NONBLOCK (Linux 5.10) fails with EINVAL on
// older kernels, and it only changes waitid(P_PIDFD), which is not used;
// poll(2) and pidfd_send_signal(2) work the same without it (Linux 5.3).
func pidfdOpen(pid int) (int, error) {
	for {
		fd, err := unix.PidfdOpen(pid, 0)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ESRCH):
			return -1, fmt.Errorf("open pidfd for pid %d: %w", pid, errGone)
		default:
			return -1, fmt.Errorf("open pidfd for pid %d: %w", pid, err)
		}
	}
}

// pidfdKill sends SIGKILL through a pidfd. sent is false when the process
// is already gone (ESRCH), which is not an error.
func pidfdKill(fd, pid int) (sent bool, err error) {
	err = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ESRCH):
		return false, nil
	default:
		return false, fmt.Errorf("send SIGKILL to pid %d: %w", pid, err)
	}
}

// pidfdExited reports, without blocking, whether the process has exited:
// the pidfd is readable once every thread of the process has exited (a
// zombie counts as exited). A process whose main thread exited while
// other threads run shows "Z" in /proc/<pid>/stat but has not exited: only
// the pidfd tells.
func pidfdExited(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

// waitPidfds polls fds until every process has exited, ctx is done, or max
// has passed. exited[i] tells whether fds[i] became readable.
func waitPidfds(ctx context.Context, fds []int, max time.Duration) (exited []bool) {
	exited = make([]bool, len(fds))
	deadline := time.Now().Add(max)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	idx := make([]int, 0, len(fds))
	p := make([]unix.PollFd, 0, len(fds))
	for {
		idx, p = idx[:0], p[:0]
		for i, fd := range fds {
			if !exited[i] {
				idx = append(idx, i)
				p = append(p, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		if len(p) == 0 || ctx.Err() != nil {
			return exited
		}
		left := time.Until(deadline)
		if left <= 0 {
			return exited
		}
		timeout := min(left, pollChunk)
		ms := int((timeout + time.Millisecond - 1) / time.Millisecond)
		n, err := unix.Poll(p, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return exited
		}
		if n == 0 {
			continue
		}
		for j := range p {
			if p[j].Revents != 0 {
				exited[idx[j]] = true
			}
		}
	}
}

// waitPidfd waits until the process behind fd has exited, or is exiting
// (every thread of it is past the point of no return: procDying), or ctx
// is done. While fd is not readable the process is not reaped, so pid
// still names it when its threads are read.
func waitPidfd(ctx context.Context, fd, pid int) error {
	// An exit wakes the poll at once; entering do_exit does not, so the
	// threads are read again after each chunk, from 1 ms up to pollChunk.
	// A dying process is given dyingGrace to finish exiting (so that the
	// runtime, run next, finds it stopped) and then counted as gone.
	var dyingSince time.Time
	for chunk := time.Millisecond; ; chunk = min(2*chunk, pollChunk) {
		if pidfdExited(fd) {
			return nil
		}
		if procDying(pid) {
			if dyingSince.IsZero() {
				dyingSince = time.Now()
			} else if time.Since(dyingSince) >= dyingGrace {
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for pid %d to exit: %w", pid, err)
		}
		waitPidfds(ctx, []int{fd}, chunk)
	}
}

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

// pidfdOpen opens a pidfd for pid. A missing process is errGone.
func pidfdOpen(pid int) (int, error) {
	for {
		fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
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

// pidfdExited reports, without blocking, whether the process has exited
// (a zombie counts as exited).
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

// waitPidfd waits until the process behind fd has exited or ctx is done.
func waitPidfd(ctx context.Context, fd, pid int) error {
	for {
		if waitPidfds(ctx, []int{fd}, time.Hour)[0] {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for pid %d to exit: %w", pid, err)
		}
	}
}

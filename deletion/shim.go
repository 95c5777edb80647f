package deletion

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// StepShim is the step that kills the task's hung shim; it runs before
// StepKill.
const StepShim = "shim"

// shimWait bounds waiting for a SIGKILLed shim to exit. A shim stuck in
// uninterruptible sleep (D) does not die until the kernel lets go of it:
// it is reported, not waited for past this bound.
const shimWait = 900 * time.Millisecond

// shim is the step before kill. containerd runs `delete` when it has
// declared the task's shim dead (a failed connect or call, at runtime or at
// its own restart), but the shim may still exist: stopped, deadlocked,
// stuck on I/O. Such a shim holds the socket, the container's I/O and its
// own memory. When Request.KillShim is set, every process proven to be the
// task's serving shim (liveness.FindTaskShims: its command line names the
// namespace and id, and it listens on the task's socket or is the parent of
// the container's verified init) is SIGKILLed through a pidfd after its
// start time is checked again, and waited for up to shimWait. A process
// that claims the task without that proof is never signalled; it is
// reported when a shim could have been proven at all (a listener on the
// socket, or a verified init's parent: otherwise /proc is not scanned).
func (d *deletion) shim(ctx context.Context, s *StepReport) {
	if !d.req.KillShim {
		s.nothing("not asked to kill the task's shim (only containerd's delete and -force are)")
		return
	}
	proven, unproven := liveness.FindTaskShims(d.b)
	for _, u := range unproven {
		s.problem(errors.New(u))
	}
	if len(proven) == 0 {
		if s.Outcome == "" {
			s.nothing("no shim process of the task")
		}
		return
	}

	waitCtx, cancel := context.WithTimeout(ctx, shimWait)
	defer cancel()
	type result struct {
		killed bool
		err    error
	}
	results := make([]result, len(proven))
	var wg sync.WaitGroup
	for i, sh := range proven {
		wg.Add(1)
		go func() {
			defer wg.Done()
			killed, err := cgroups.KillVerified(waitCtx, sh.Pid, sh.Start)
			results[i] = result{killed, err}
		}()
	}
	wg.Wait()

	for i, sh := range proven {
		what := fmt.Sprintf("shim %d (%s)", sh.Pid, sh.Proof)
		if sh.State == 'T' || sh.State == 't' {
			what = fmt.Sprintf("stopped shim %d (%s)", sh.Pid, sh.Proof)
		}
		switch r := results[i]; {
		case r.err == nil && r.killed:
			s.done("killed " + what)
		case r.err == nil:
			s.nothing(fmt.Sprintf("shim %d exited before it was signalled", sh.Pid))
		case errors.Is(r.err, context.DeadlineExceeded) || errors.Is(r.err, context.Canceled):
			s.fail(fmt.Errorf("%s: SIGKILL sent, not gone after %s%s", what, shimWait, stuck(sh.Pid)))
		default:
			s.fail(fmt.Errorf("%s: %w", what, r.err))
		}
	}
}

// stuck says why a SIGKILLed process has not exited, when its state tells.
func stuck(pid int) string {
	st, err := liveness.ReadStat(pid)
	switch {
	case err != nil:
		return ""
	case st.State == 'D':
		return " (in uninterruptible sleep, D: it exits when the kernel lets it go; not waited for)"
	default:
		return fmt.Sprintf(" (state %c)", st.State)
	}
}

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

// shim is the step "shim" (see Delete), before kill. It first asks the task's shim
// (liveness.AskShim: a connect and one call of the task API within
// liveness.AskTimeout). containerd runs `delete` when its connection to the
// shim closed, which does not prove the shim dead: containerd 2.x closes
// its own connection when it deletes a pod's sandbox task, while the
// sandbox's shim still serves the pod's other containers, and then runs
// delete for the sandbox. So:
//   - the shim answers (or cannot be asked): with LeaveLiveShim it is left
//     alone, and so are its socket and the pod's other tasks; the delete
//     goes on with this task's own container only, as upstream's delete
//     does (its `runc delete --force`, its unmount), and answers
//     containerd. With RefuseLiveShim the delete refuses (ErrShimAlive)
//     before anything is touched; with KillLiveShim (-force by hand) it is
//     killed as below;
//   - the shim is hung (accepted, no answer): refused with RefuseLiveShim,
//     else killed as below;
//   - dead (nothing listens): with LeaveLiveShim or KillLiveShim a process
//     that is still the task's shim (its socket removed) is killed as
//     below; with RefuseLiveShim no shim is signalled, and the delete
//     refuses (ErrShimAlive) when liveness.Prober still finds the shim
//     alive (Prober.ProbeAnswered: a shim process of the task holding its
//     socket, or the parent of the container's verified init). This is
//     the one live-shim check of gc and of a delete by hand: under the
//     task directory's lock, after the one load.
//
// Killed: every process proven to be the task's serving shim
// (liveness.FindTaskShims: a shim binary in this mount namespace whose
// command line names the namespace and id, and that listens on the task's
// socket or is the parent of the container's verified init) is SIGKILLed
// through a pidfd after its start time is checked again, and waited for up
// to shimWait. A process that claims the task without that proof is never
// signalled; it is reported when a shim could have been proven at all.
func (d *deletion) shim(ctx context.Context, s *StepReport) {
	d.answer = liveness.AskShim(ctx, d.b, liveness.AskTimeout)
	policy := d.req.LiveShim
	switch d.answer.Verdict {
	case liveness.ShimAnswers, liveness.ShimUnknown:
		switch policy {
		case RefuseLiveShim:
			d.refused = fmt.Errorf("%w (%s)", ErrShimAlive, d.answer.Why)
			s.fail(d.refused)
			return
		case LeaveLiveShim:
			d.shimAlive = true
			s.done("shim alive: left (" + d.answer.Why + "); its socket and the pod's other tasks are not touched")
			return
		}
		s.note(d.answer.Why + ": killed on -force")
	case liveness.ShimHung:
		if policy == RefuseLiveShim {
			d.refused = fmt.Errorf("%w: hung (%s)", ErrShimAlive, d.answer.Why)
			s.fail(d.refused)
			return
		}
		s.note(d.answer.Why)
	default:
		if policy == RefuseLiveShim {
			// The socket is dead; a shim process that still holds it, or
			// is the parent of the container's verified init, is alive
			// all the same (liveness.Prober).
			if st := d.prober().ProbeAnswered(d.b, d.answer); st.Alive {
				d.refused = fmt.Errorf("%w (%s)", ErrShimAlive, st.Why)
				s.fail(d.refused)
				return
			}
			s.nothing("shim dead (" + d.answer.Why + "); no shim process is signalled (only containerd's delete and -force kill one)")
			return
		}
	}
	proven, unproven := liveness.FindTaskShims(d.b)
	for _, u := range unproven {
		s.problem(errors.New(u))
	}
	if len(proven) == 0 {
		if s.Outcome == "" {
			s.nothing("no shim process of the task (" + d.answer.Why + ")")
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

package deletion

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
	"golang.org/x/sys/unix"
)

// kill is step 3. It signals only what is proven to be the container's:
// runc's init pid whose start time still matches (through a pidfd), and the
// members of the container's cgroups; a pid named only by init.pid is
// signalled only if it is in those cgroups. It waits until they are gone,
// then lets the runtime delete the (now stopped) container itself.
func (d *deletion) kill(ctx context.Context, s *StepReport) {
	b := d.b
	killCtx, cancel := context.WithTimeout(ctx, killTimeout)
	defer cancel()

	var (
		wg         sync.WaitGroup
		initKilled bool
		initErr    error
		initWhat   string
	)
	switch {
	case b.State != nil && b.State.InitProcessPid > 0 && len(d.cgroups.Dirs) > 0 && !d.cgroups.Contains(b.State.InitProcessPid):
		// runc puts its init in the container's cgroups: a live process
		// with the recorded start time outside them is not the init.
		pid := b.State.InitProcessPid
		if st, err := liveness.ReadStat(pid); err == nil && !st.Exited() && st.Start == b.State.InitProcessStartTime {
			s.problem(fmt.Errorf("runc state's init %d has the recorded start time but is not in the container's cgroups: not signalled", pid))
		}
	case b.State != nil && b.State.InitProcessPid > 0:
		pid, st := b.State.InitProcessPid, b.State.InitProcessStartTime
		initWhat = fmt.Sprintf("init %d (start time verified)", pid)
		wg.Add(1)
		go func() {
			defer wg.Done()
			initKilled, initErr = cgroups.KillVerified(killCtx, pid, st)
		}()
	case b.InitPid > 0 && len(d.cgroups.Dirs) > 0:
		pid := b.InitPid
		initWhat = fmt.Sprintf("init %d (member of the container's cgroup)", pid)
		wg.Add(1)
		go func() {
			defer wg.Done()
			initKilled, initErr = d.cgroups.KillMember(killCtx, pid)
		}()
	case b.InitPid > 0:
		if unix.Kill(b.InitPid, 0) == nil {
			s.problem(fmt.Errorf("init.pid names live pid %d, but nothing proves it is the container's: not signalled", b.InitPid))
		}
	}

	n, err := d.cgroups.Kill(killCtx)
	wg.Wait()
	switch {
	case initErr != nil:
		d.survivors = true
		s.fail(fmt.Errorf("%s: %w", initWhat, initErr))
	case initKilled:
		s.done("killed " + initWhat)
	}
	if err != nil {
		d.survivors = true
		s.fail(err)
	} else if n > 0 {
		s.done(fmt.Sprintf("killed %d processes in %d cgroups", n, len(d.cgroups.Dirs)))
	}

	if s.Outcome == "" {
		s.nothing("no live process of the container")
	}
}

// killTimeout bounds killing and waiting for the container's processes.
const killTimeout = 2 * time.Second

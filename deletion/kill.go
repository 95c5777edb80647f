package deletion

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/liveness"
)

// kill is the step "kill" (see Delete). It signals only what is proven to be the container's:
// runc's init pid whose start time still matches (through a pidfd), and the
// members of the container's cgroups; a pid named only by init.pid is
// signalled only if it is in those cgroups. It waits until they are gone,
// then lets the runtime delete the (now stopped) container itself. A live
// init.pid with nothing to prove or disprove it (no trusted runc state, no
// cgroups) fails the step and keeps the task directory (unproven).
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
			// The state names a live process that is not the init: it is
			// not this container's (forged, or another container's), and
			// the runtime, which would act on it (`runc delete --force`
			// kills the init it names), is not run either.
			d.stateUntrusted = true
			s.problem(fmt.Errorf("runc state's init %d has the recorded start time but is not in the container's cgroups: not signalled, and the state not used", pid))
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
		// Neither a trusted runc state nor the container's cgroups: a
		// live process under init.pid may be the running init, which
		// nothing proves. It is not signalled, and the task directory,
		// the only record of it, is kept (d.unproven): the delete is
		// incomplete, not done.
		if st, err := liveness.ReadStat(b.InitPid); err == nil && !st.Exited() && !startedAfter(st.Start, d.initPidWritten()) {
			d.unproven = true
			s.fail(fmt.Errorf("init.pid names live pid %d, but nothing proves it is the container's (no trusted runc state, no cgroups): not signalled; task directory kept", b.InitPid))
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

// initPidWritten is when init.pid was last written (the zero time when it
// cannot be told): runc writes it once its init runs.
func (d *deletion) initPidWritten() time.Time {
	fi, err := os.Stat(filepath.Join(d.path, bundle.InitPidFile))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// startedAfter reports whether a process with this start time (clock
// ticks since boot, USER_HZ) started more than a second after t: it cannot
// be the init that init.pid recorded at t. The zero t tells nothing.
func startedAfter(start uint64, t time.Time) bool {
	if t.IsZero() {
		return false
	}
	boot, err := bootTime()
	if err != nil {
		return false
	}
	const userHZ = 100 // sysconf(_SC_CLK_TCK) on every Linux architecture containerd supports
	started := boot.Add(time.Duration(start) * time.Second / userHZ)
	return started.After(t.Add(time.Second))
}

// bootTime is btime of /proc/stat.
func bootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("btime of /proc/stat: %w", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}

// killTimeout bounds killing and waiting for the container's processes.
const killTimeout = 2 * time.Second

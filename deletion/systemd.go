package deletion

import (
	"context"
	"errors"
	"fmt"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/systemdunit"
)

// releaseSystemdUnit is part of the step "release" (see Delete), after the runtime's
// delete and the cgroupfs removal: for a container whose evidence says
// systemd (options SystemdCgroup, runc state's Systemd, or a
// "slice:prefix:name" cgroupsPath), it makes sure systemd no longer holds
// the container's scope unit. When runc's own delete ran it stopped the
// unit itself and this finds it not loaded; when it did not run or failed,
// or the cgroup was removed behind systemd's back (which can leave the
// unit "active" with no cgroup: the next container with this cgroupsPath
// would then start outside its scope, or fail), the unit is stopped
// through systemd (package systemdunit: only the scope the evidence names,
// in the slice it names; bounded by systemdunit.DefaultStopTimeout), and
// the cgroups are removed again. Without a reachable systemd the report
// notes that the unit could not be checked; the cgroupfs removal already
// done is then all there is.
func (d *deletion) releaseSystemdUnit(ctx context.Context, s *StepReport) {
	ev := evidence(d.b).unit
	if !ev.IsSystemd() {
		return
	}
	u, err := systemdunit.FromEvidence(ev)
	if err != nil {
		s.problem(fmt.Errorf("systemd unit: %w", err))
		return
	}
	res := systemdunit.Stop(ctx, u, systemdunit.DefaultStopTimeout)
	switch {
	case res.Unchecked != "":
		s.note(res.Unchecked)
	case res.Refused != "":
		s.problem(errors.New(res.Refused))
	case res.NotLoaded:
		s.note("systemd unit " + u.Name + " not loaded")
	}
	for _, did := range res.Did {
		s.done(did)
	}
	for _, p := range res.Problems {
		s.fail(errors.New(p))
	}
	if res.Stopped {
		// systemd removes the scope's cgroup when it stops it; anything it
		// left (another hierarchy) goes as before.
		removed, err := d.cgroups.Remove(ctx)
		if len(removed) > 0 {
			s.done(fmt.Sprintf("removed %d cgroups after the unit stopped", len(removed)))
		}
		if err != nil {
			s.fail(err)
		}
	}
}

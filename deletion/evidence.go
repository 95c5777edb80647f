package deletion

import (
	pathpkg "path"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/systemdunit"
)

// containerEvidence is everything the loaded bundle tells about the
// container's cgroups and its systemd unit, worked out once (evidence):
// every step that asks "where are its cgroups?" or "is it
// systemd-managed?" reads it from here.
type containerEvidence struct {
	// systemd: options.json's SystemdCgroup, or runc state's
	// config.cgroups.Systemd. Either says the container is
	// systemd-managed, whatever config.json's cgroupsPath says.
	systemd bool
	// cgroups is what finds the container's cgroups (load): runc state's
	// cgroup paths, config.json's cgroupsPath, systemd.
	cgroups cgroups.Evidence
	// check is config.json's cgroupsPath alone, against which runc's
	// state is checked (stateMatchesBundle), when it is absolute or in
	// systemd's form and runc's state exists with cgroup paths; its
	// CgroupsPath is "" (nothing to check) otherwise. A relative
	// cgroupsPath is resolved against the cgroup of whoever resolves it,
	// so it is not compared this way (see relative).
	check cgroups.Evidence
	// state is runc state's cgroup paths alone.
	state cgroups.Evidence
	// relative is config.json's cgroupsPath, cleaned and without its
	// slashes at either end, when it is a relative cgroupfs path (not
	// systemd-managed, not absolute, not "slice:prefix:name"): runc
	// joined it to the cgroup it ran in, so it must end each of the
	// state's cgroup paths (stateIsBundles). "" otherwise.
	relative string
	// unit names the container's systemd scope unit (release): runc's
	// state (its cgroup config names the unit exactly) when it says
	// systemd, else config.json's cgroupsPath, with systemd as above.
	unit systemdunit.Evidence
}

// evidence works out containerEvidence from b: runc's state (b.State),
// config.json (b.Spec) and options.json (b.Options), each of which may be
// missing. It is called again when load stops trusting runc's state (and
// sets b.State to nil).
func evidence(b *bundle.Bundle) containerEvidence {
	var (
		ev         = containerEvidence{unit: systemdunit.Evidence{ID: b.ID}}
		state      = b.State
		path       string
		stateCgrps *bundle.RuncCgroups
	)
	if b.Spec != nil && b.Spec.Linux != nil {
		path = b.Spec.Linux.CgroupsPath
	}
	if state != nil {
		stateCgrps = state.Config.Cgroups
	}
	ev.systemd = (b.Options != nil && b.Options.SystemdCgroup) || (stateCgrps != nil && stateCgrps.Systemd)

	ev.cgroups = cgroups.Evidence{CgroupsPath: path, Systemd: ev.systemd}
	if state != nil {
		ev.cgroups.StatePaths = state.CgroupPaths
		ev.state.StatePaths = state.CgroupPaths
	}

	relative := path != "" && !ev.systemd && !strings.HasPrefix(path, "/") && strings.Count(path, ":") != 2
	switch {
	case relative:
		ev.relative = strings.Trim(pathpkg.Clean("/"+path), "/")
	case path != "" && state != nil && len(state.CgroupPaths) > 0:
		ev.check = cgroups.Evidence{CgroupsPath: path, Systemd: ev.systemd}
	}

	ev.unit.CgroupsPath = path
	ev.unit.Systemd = ev.systemd
	if stateCgrps != nil && stateCgrps.Systemd && stateCgrps.Name != "" {
		ev.unit.State = &systemdunit.StateCgroups{Parent: stateCgrps.Parent, ScopePrefix: stateCgrps.ScopePrefix, Name: stateCgrps.Name}
	}
	return ev
}

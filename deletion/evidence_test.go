package deletion

import (
	"reflect"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/cgroups"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/systemdunit"
)

// TestEvidence: the one answer to "where are the container's cgroups, is
// it systemd-managed, which unit is its?" from runc's state, config.json
// and options.json. runc's state saying Systemd counts whatever
// config.json's cgroupsPath is (the rule the first version wrote under a
// condition that was always true).
func TestEvidence(t *testing.T) {
	const id = "web"
	paths := map[string]string{"": "/sys/fs/cgroup/unified/default/web", "memory": "/sys/fs/cgroup/memory/default/web"}
	state := func(c *bundle.RuncCgroups, p map[string]string) *bundle.RuncState {
		return &bundle.RuncState{ID: id, CgroupPaths: p, Config: bundle.RuncConfig{Cgroups: c}}
	}
	spec := func(p string) *bundle.Spec { return &bundle.Spec{Linux: &bundle.SpecLinux{CgroupsPath: p}} }
	systemdState := &bundle.RuncCgroups{Parent: "system.slice", ScopePrefix: "cri-containerd", Name: id, Systemd: true}
	const sdPath = "system.slice:cri-containerd:web"

	for _, tc := range []struct {
		name string
		b    bundle.Bundle
		want containerEvidence
	}{
		{
			name: "nothing",
			b:    bundle.Bundle{ID: id},
			want: containerEvidence{unit: systemdunit.Evidence{ID: id}},
		},
		{
			name: "cgroupfs: absolute cgroupsPath and runc's state",
			b:    bundle.Bundle{ID: id, Spec: spec("/default/web"), State: state(&bundle.RuncCgroups{Path: "/default/web"}, paths)},
			want: containerEvidence{
				cgroups: cgroups.Evidence{StatePaths: paths, CgroupsPath: "/default/web"},
				check:   cgroups.Evidence{CgroupsPath: "/default/web"},
				state:   cgroups.Evidence{StatePaths: paths},
				unit:    systemdunit.Evidence{ID: id, CgroupsPath: "/default/web"},
			},
		},
		{
			name: "absolute cgroupsPath, state without cgroup paths: nothing to check",
			b:    bundle.Bundle{ID: id, Spec: spec("/default/web"), State: state(&bundle.RuncCgroups{}, nil)},
			want: containerEvidence{
				cgroups: cgroups.Evidence{CgroupsPath: "/default/web"},
				unit:    systemdunit.Evidence{ID: id, CgroupsPath: "/default/web"},
			},
		},
		{
			name: "runc's state says systemd, options.json missing, cgroupsPath set",
			b:    bundle.Bundle{ID: id, Spec: spec(sdPath), State: state(systemdState, paths)},
			want: containerEvidence{
				systemd: true,
				cgroups: cgroups.Evidence{StatePaths: paths, CgroupsPath: sdPath, Systemd: true},
				check:   cgroups.Evidence{CgroupsPath: sdPath, Systemd: true},
				state:   cgroups.Evidence{StatePaths: paths},
				unit: systemdunit.Evidence{ID: id, CgroupsPath: sdPath, Systemd: true,
					State: &systemdunit.StateCgroups{Parent: "system.slice", ScopePrefix: "cri-containerd", Name: id}},
			},
		},
		{
			name: "options.json says systemd, no state",
			b:    bundle.Bundle{ID: id, Spec: spec(sdPath), Options: &bundle.Options{SystemdCgroup: true}},
			want: containerEvidence{
				systemd: true,
				cgroups: cgroups.Evidence{CgroupsPath: sdPath, Systemd: true},
				unit:    systemdunit.Evidence{ID: id, CgroupsPath: sdPath, Systemd: true},
			},
		},
		{
			name: "runc's state says systemd without a unit name: no state for the unit",
			b:    bundle.Bundle{ID: id, State: state(&bundle.RuncCgroups{Systemd: true}, paths)},
			want: containerEvidence{
				systemd: true,
				cgroups: cgroups.Evidence{StatePaths: paths, Systemd: true},
				state:   cgroups.Evidence{StatePaths: paths},
				unit:    systemdunit.Evidence{ID: id, Systemd: true},
			},
		},
		{
			name: "relative cgroupsPath: compared as a suffix, not checked as a path",
			b:    bundle.Bundle{ID: id, Spec: spec("default//web/"), State: state(&bundle.RuncCgroups{}, paths)},
			want: containerEvidence{
				cgroups:  cgroups.Evidence{StatePaths: paths, CgroupsPath: "default//web/"},
				state:    cgroups.Evidence{StatePaths: paths},
				relative: "default/web",
				unit:     systemdunit.Evidence{ID: id, CgroupsPath: "default//web/"},
			},
		},
		{
			name: "a:b:c without systemd is systemd's form, not relative",
			b:    bundle.Bundle{ID: id, Spec: spec(sdPath), State: state(&bundle.RuncCgroups{}, paths)},
			want: containerEvidence{
				cgroups: cgroups.Evidence{StatePaths: paths, CgroupsPath: sdPath},
				check:   cgroups.Evidence{CgroupsPath: sdPath},
				state:   cgroups.Evidence{StatePaths: paths},
				unit:    systemdunit.Evidence{ID: id, CgroupsPath: sdPath},
			},
		},
		{
			name: "relative-looking cgroupsPath under systemd is not relative",
			b:    bundle.Bundle{ID: id, Spec: spec("web"), Options: &bundle.Options{SystemdCgroup: true}, State: state(&bundle.RuncCgroups{}, paths)},
			want: containerEvidence{
				systemd: true,
				cgroups: cgroups.Evidence{StatePaths: paths, CgroupsPath: "web", Systemd: true},
				check:   cgroups.Evidence{CgroupsPath: "web", Systemd: true},
				state:   cgroups.Evidence{StatePaths: paths},
				unit:    systemdunit.Evidence{ID: id, CgroupsPath: "web", Systemd: true},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := evidence(&tc.b); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("evidence =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

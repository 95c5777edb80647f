package systemdunit

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fs2"
	runcsystemd "github.com/opencontainers/cgroups/systemd"
)

// TestExpandSliceMatchesRunc checks ExpandSlice against runc's own, on good
// and bad names.
func TestExpandSliceMatchesRunc(t *testing.T) {
	for _, slice := range []string{
		"system.slice", "-.slice", "kubepods.slice", "kubepods-besteffort.slice",
		"kubepods-besteffort-pod1.slice", "kubepods-burstable-pod0a1b_2c3d.slice",
		"a-b-c-d.slice", ".slice", "slice", "a--b.slice", "-a.slice", "a-.slice",
		"a/b.slice", "", "a.scope", "user-1000.slice",
	} {
		t.Run(slice, func(t *testing.T) {
			want, wantErr := runcsystemd.ExpandSlice(slice)
			got, err := ExpandSlice(slice)
			if (err != nil) != (wantErr != nil) || got != want {
				t.Fatalf("ExpandSlice(%q) = %q, %v; runc: %q, %v", slice, got, err, want, wantErr)
			}
		})
	}
}

// TestFromEvidenceMatchesRunc derives the unit from a cgroupsPath as runc's
// specconv does (split on ':' into Parent, ScopePrefix, Name) and compares
// the cgroup path with what runc's own systemd v2 manager computes.
func TestFromEvidenceMatchesRunc(t *testing.T) {
	for _, tc := range []struct {
		ev       Evidence
		unit     string
		slice    string
		notScope bool
	}{
		{ev: Evidence{CgroupsPath: "kubepods-besteffort-pod1.slice:cri-containerd:abc", Systemd: true},
			unit: "cri-containerd-abc.scope", slice: "kubepods-besteffort-pod1.slice"},
		{ev: Evidence{CgroupsPath: "kubepods-burstable-pod0a1b_2c3d.slice:cri-containerd:0123456789abcdef"},
			unit: "cri-containerd-0123456789abcdef.scope", slice: "kubepods-burstable-pod0a1b_2c3d.slice"},
		{ev: Evidence{CgroupsPath: "system.slice:docker:1234", Systemd: true},
			unit: "docker-1234.scope", slice: "system.slice"},
		{ev: Evidence{CgroupsPath: ":runc:x", Systemd: true}, unit: "runc-x.scope", slice: "system.slice"},
		{ev: Evidence{CgroupsPath: "-.slice:p:x", Systemd: true}, unit: "p-x.scope", slice: "-.slice"},
		{ev: Evidence{CgroupsPath: "a.slice::x", Systemd: true}, unit: "-x.scope", slice: "a.slice"},
		{ev: Evidence{ID: "web", Systemd: true}, unit: "runc-web.scope", slice: "system.slice"},
		{ev: Evidence{ID: "web", CgroupsPath: "/default/web"}, notScope: true}, // cgroupfs
		{ev: Evidence{ID: "web", State: &StateCgroups{Parent: "kubepods.slice", ScopePrefix: "cri-containerd", Name: "web"},
			CgroupsPath: "other.slice:x:y"}, unit: "cri-containerd-web.scope", slice: "kubepods.slice"},
		{ev: Evidence{CgroupsPath: "kubepods.slice:p:my.slice", Systemd: true}, notScope: true},
		{ev: Evidence{CgroupsPath: "a.slice:p:", Systemd: true}, notScope: true},
		{ev: Evidence{CgroupsPath: "a--b.slice:p:x", Systemd: true}, notScope: true},
		{ev: Evidence{CgroupsPath: "a.slice:p:x:y", Systemd: true}, notScope: true},
		{ev: Evidence{CgroupsPath: "a.slice:p:x/../../y", Systemd: true}, notScope: true},
		{ev: Evidence{CgroupsPath: "a.slice:p:x y", Systemd: true}, notScope: true},
		{ev: Evidence{Systemd: true}, notScope: true},
		{ev: Evidence{}, notScope: true},
	} {
		t.Run(tc.ev.CgroupsPath+"|"+tc.ev.ID, func(t *testing.T) {
			u, err := FromEvidence(tc.ev)
			if tc.notScope {
				if err == nil {
					t.Fatalf("FromEvidence(%+v) = %+v, want an error", tc.ev, u)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromEvidence(%+v): %v", tc.ev, err)
			}
			if u.Name != tc.unit || u.Slice != tc.slice {
				t.Fatalf("FromEvidence(%+v) = %+v, want unit %s in %s", tc.ev, u, tc.unit, tc.slice)
			}
			// runc's side: the cgroup config specconv builds, and the
			// path its v2 systemd manager computes.
			c := &cgroups.Cgroup{Systemd: true, Resources: &cgroups.Resources{}}
			switch {
			case tc.ev.State != nil:
				c.Parent, c.ScopePrefix, c.Name = tc.ev.State.Parent, tc.ev.State.ScopePrefix, tc.ev.State.Name
			case tc.ev.CgroupsPath != "":
				p := strings.Split(tc.ev.CgroupsPath, ":")
				c.Parent, c.ScopePrefix, c.Name = p[0], p[1], p[2]
			default:
				c.ScopePrefix, c.Name = "runc", tc.ev.ID
			}
			m, err := runcsystemd.NewUnifiedManager(c, "")
			if err != nil {
				t.Fatalf("runc's manager: %v", err)
			}
			want := strings.TrimPrefix(m.Path(""), fs2.UnifiedMountpoint)
			if u.Path != want {
				t.Fatalf("path %q, runc's %q", u.Path, want)
			}
			if filepath.Base(want) != u.Name {
				t.Fatalf("unit %q, runc's path ends in %q", u.Name, filepath.Base(want))
			}
		})
	}
}

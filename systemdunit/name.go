package systemdunit

import (
	"errors"
	"fmt"
	"strings"
)

// Evidence is what tells whether a container is in a systemd unit and which.
// Every field may be empty or garbage; garbage gives an error from FromEvidence,
// never another unit's name.
type Evidence struct {
	// ID is the container's id: runc's default unit name when the
	// cgroupsPath is empty ("runc-<id>.scope" in system.slice).
	ID string
	// CgroupsPath is the spec's linux.cgroupsPath; in systemd form it is
	// "slice:prefix:name".
	CgroupsPath string
	// Systemd is options.json's SystemdCgroup or runc state's Systemd. A
	// cgroupsPath "a:b:c" without '/' counts as systemd form without it,
	// as package cgroups reads it.
	Systemd bool
	// State is runc's own record of the cgroup config (state.json's
	// config.cgroups), when present and Systemd: it wins over CgroupsPath.
	State *StateCgroups
}

// StateCgroups is the part of runc state.json's config.cgroups that names
// the unit: runc's cgroups.Cgroup Parent, ScopePrefix and Name.
type StateCgroups struct {
	Parent      string
	ScopePrefix string
	Name        string
}

// Unit is the container's scope unit as runc's systemd driver names it.
type Unit struct {
	// Name is the unit: "<prefix>-<name>.scope".
	Name string
	// Slice is the slice unit the scope lives in, as systemd's Slice
	// property names it: the evidence's slice, "system.slice" when empty.
	Slice string
	// Path is the unit's cgroup path below the cgroup root, as runc's
	// driver places it: ExpandSlice(Slice) + "/" + Name.
	Path string
}

// ErrNotSystemd is returned by FromEvidence when the evidence does not say
// systemd.
var ErrNotSystemd = errors.New("no systemd cgroup evidence")

// IsSystemd reports whether the evidence says the container's cgroup is
// systemd's: the Systemd flag, runc state with a systemd cgroup config, or
// a cgroupsPath of the form "slice:prefix:name" (two ':' and no '/').
func (ev Evidence) IsSystemd() bool {
	if ev.Systemd || ev.State != nil {
		return true
	}
	p := ev.CgroupsPath
	return strings.Count(p, ":") == 2 && !strings.Contains(p, "/")
}

// FromEvidence derives the container's scope unit exactly as runc's
// systemd driver does (runc's specconv CreateCgroupConfig and
// opencontainers/cgroups/systemd getUnitName, ExpandSlice):
//
//   - runc state's cgroup config (Parent, ScopePrefix, Name), when given;
//   - else the cgroupsPath "slice:prefix:name";
//   - else, with an empty cgroupsPath, runc's default "runc-<id>.scope".
//
// An empty slice is "system.slice". A name ending in ".slice" makes runc
// create a slice, not a scope: that is an error here (only scopes are ever
// stopped). So is any slice ExpandSlice rejects, a cgroupsPath that is not
// three ':'-separated parts, an empty name, and any part holding '/' or a
// character systemd does not allow in unit names. Without systemd evidence
// it returns ErrNotSystemd.
func FromEvidence(ev Evidence) (Unit, error) {
	if !ev.IsSystemd() {
		return Unit{}, ErrNotSystemd
	}
	var parent, prefix, name string
	switch {
	case ev.State != nil && ev.State.Name != "":
		parent, prefix, name = ev.State.Parent, ev.State.ScopePrefix, ev.State.Name
	case ev.CgroupsPath != "":
		parts := strings.Split(ev.CgroupsPath, ":")
		if len(parts) != 3 {
			return Unit{}, fmt.Errorf("systemd cgroupsPath %q is not \"slice:prefix:name\"", ev.CgroupsPath)
		}
		parent, prefix, name = parts[0], parts[1], parts[2]
	case ev.ID != "":
		prefix, name = "runc", ev.ID
	default:
		return Unit{}, errors.New("systemd cgroup evidence names no unit: no cgroupsPath and no id")
	}
	if name == "" {
		return Unit{}, fmt.Errorf("systemd cgroup evidence %q has an empty name", ev.CgroupsPath)
	}
	if strings.HasSuffix(name, ".slice") {
		return Unit{}, fmt.Errorf("systemd cgroup name %q is a slice, not a scope: not the container's scope", name)
	}
	slice := parent
	if slice == "" {
		slice = "system.slice"
	}
	slicePath, err := ExpandSlice(slice)
	if err != nil {
		return Unit{}, err
	}
	unit := prefix + "-" + name + ".scope"
	if err := validUnitName(unit); err != nil {
		return Unit{}, err
	}
	path := slicePath + "/" + unit
	if slicePath == "/" {
		path = "/" + unit
	}
	return Unit{Name: unit, Slice: slice, Path: path}, nil
}

// ExpandSlice is runc's systemd ExpandSlice: "a-b-c.slice" ->
// "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root "/". A name that
// does not end in ".slice", is just ".slice", holds '/' or an empty
// component ("a--b.slice", "-a.slice") is an error.
func ExpandSlice(slice string) (string, error) {
	const suffix = ".slice"
	if len(slice) < len(suffix) || !strings.HasSuffix(slice, suffix) || strings.Contains(slice, "/") {
		return "", fmt.Errorf("invalid slice name: %s", slice)
	}
	sliceName := strings.TrimSuffix(slice, suffix)
	if sliceName == "-" {
		return "/", nil
	}
	var path, prefix string
	for _, component := range strings.Split(sliceName, "-") {
		if component == "" {
			return "", fmt.Errorf("invalid slice name: %s", slice)
		}
		path += "/" + prefix + component + suffix
		prefix += component + "-"
	}
	return path, nil
}

// validUnitName checks the characters systemd allows in a unit name
// (unit_name_is_valid: [A-Za-z0-9:_.\-@\\], at most 255 bytes): what the
// evidence names must be addressable as one unit and nothing else.
func validUnitName(name string) error {
	if len(name) > 255 {
		return fmt.Errorf("unit name %.40q... is longer than 255 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(":_.-@\\", c) >= 0:
		default:
			return fmt.Errorf("unit name %q holds %q, which systemd does not allow", name, c)
		}
	}
	return nil
}

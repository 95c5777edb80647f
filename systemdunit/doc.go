// Package systemdunit owns the container's systemd scope unit: which unit
// runc's systemd cgroup driver made for a container (FromEvidence, from the
// same evidence the delete path reads: options.json SystemdCgroup, runc
// state's cgroup config, a "slice:prefix:name" cgroupsPath), stopping it
// through systemd's D-Bus API when runc's own delete did not (Stop), and
// listing units by name pattern for gc's residue report (List, read-only).
//
// It never stops a unit whose name does not follow from the evidence, nor a
// unit that is not a .scope in the slice the evidence names (the unit's
// Slice property is checked first), never starts, masks or reloads anything,
// and never removes a cgroup directory itself: that stays with package
// cgroups. When systemd cannot be reached (no /run/systemd/system, or no bus
// to connect to) Stop says the unit could not be checked; that is not an
// error.
package systemdunit

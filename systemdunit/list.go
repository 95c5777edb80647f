package systemdunit

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// UnitStatus is one unit as systemd lists it.
type UnitStatus struct {
	Name        string
	LoadState   string
	ActiveState string
}

// List returns the units systemd has in memory whose names match one of
// patterns (systemd's globs, e.g. "cri-containerd-*.scope"), sorted by
// name, within timeout (DefaultStopTimeout when <= 0). It only reads. When
// systemd is not running or no bus can be connected, unchecked says why and
// the list is empty; err is a failed call to a reachable systemd.
func List(ctx context.Context, patterns []string, timeout time.Duration) (units []UnitStatus, unchecked string, err error) {
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, why := dial(ctx)
	if conn == nil {
		return nil, "systemd units could not be checked: " + why, nil
	}
	defer conn.Close()
	got, err := conn.ListUnitsByPatternsContext(ctx, nil, patterns)
	if err != nil {
		return nil, "", fmt.Errorf("list systemd units %v: %w", patterns, bounded(ctx, err, timeout))
	}
	for _, u := range got {
		units = append(units, UnitStatus{Name: u.Name, LoadState: u.LoadState, ActiveState: u.ActiveState})
	}
	sort.Slice(units, func(i, j int) bool { return units[i].Name < units[j].Name })
	return units, "", nil
}

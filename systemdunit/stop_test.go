package systemdunit

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStopWithoutSystemd: on a machine whose init is not systemd, Stop
// says the unit could not be checked and does nothing. The stop itself is
// proven against a real systemd in tests/systemd.
func TestStopWithoutSystemd(t *testing.T) {
	u, err := FromEvidence(Evidence{CgroupsPath: "kubepods-besteffort-pod1.slice:cri-containerd:abc"})
	if err != nil {
		t.Fatal(err)
	}
	old := RunDir
	t.Cleanup(func() { RunDir = old })

	RunDir = filepath.Join(t.TempDir(), "missing")
	res := Stop(context.Background(), u, time.Second)
	if !strings.Contains(res.Unchecked, "could not be checked: systemd is not running") || res.Stopped || len(res.Problems) > 0 {
		t.Fatalf("no systemd: %+v", res)
	}

	// systemd's directory present, but no bus here: unchecked, within the bound.
	RunDir = t.TempDir()
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	start := time.Now()
	res = Stop(context.Background(), u, 500*time.Millisecond)
	if res.Unchecked == "" && len(res.Problems) == 0 || res.Stopped {
		t.Fatalf("no bus: %+v", res)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("no bus: took %s, bound 500ms", d)
	}
	t.Logf("no bus: %s%s", res.Unchecked, strings.Join(res.Problems, "; "))
}

// TestStopRefusesNonScope: nothing but a scope with a slice is stopped,
// whatever the caller builds by hand.
func TestStopRefusesNonScope(t *testing.T) {
	for _, u := range []Unit{{Name: "kubepods.slice", Slice: "-.slice"}, {Name: "x.scope"}, {Name: "containerd.service", Slice: "system.slice"}} {
		res := Stop(context.Background(), u, time.Second)
		if res.Refused == "" || res.Stopped {
			t.Fatalf("%+v: %+v", u, res)
		}
	}
}

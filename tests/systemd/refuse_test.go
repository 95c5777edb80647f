package systemd

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// TestNeverStopsAnotherSlicesUnit: a task whose evidence names
// cri-containerd-<id>.scope in a pod slice, while systemd has a scope of
// that name in another slice (not the container's), is deleted without
// stopping that scope: the report says why, and the scope and its process
// live on.
func TestNeverStopsAnotherSlicesUnit(t *testing.T) {
	ctx := context.Background()
	sd := env.sd
	id := testutil.RandID("other")
	unit := "cri-containerd-" + id + ".scope"
	scope := sd.Command(ctx, "systemd-run", "--scope", "--unit="+unit, "--slice=other.slice", "sleep", "1000009")
	if err := scope.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = sd.Output(ctx, "systemctl", "stop", unit)
		_ = scope.Process.Kill()
		_ = scope.Wait()
	})
	if !harness.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		load, active, err := sd.UnitState(unit)
		return err == nil && load == "loaded" && active == "active"
	}) {
		t.Fatalf("scope %s did not start", unit)
	}

	// containerd's layout: the evidence that it is a task directory.
	dir := filepath.Join(sd.Dir, "refuse", "io.containerd.runtime.v2.task", namespace, id)
	for name, content := range map[string]string{
		"config.json":  testutil.SpecWithCgroup(t, "kubepods-besteffort-pod9.slice:cri-containerd:"+id),
		"options.json": `{"systemd_cgroup":true}`,
	} {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := sd.Command(ctx, env.oursIn, "-namespace", namespace, "-id", id, "-bundle", dir, "delete", "--format", "json").Output()
	t.Logf("record: %s", out)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("delete: %v", err)
	}
	var rec struct {
		Steps []struct {
			Step     string   `json:"step"`
			Problems []string `json:"problems"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		t.Fatalf("record: %v", err)
	}
	var problems string
	for _, s := range rec.Steps {
		if s.Step == "release" {
			problems = strings.Join(s.Problems, "; ")
		}
	}
	want := `systemd unit ` + unit + ` is in slice "other.slice", not "kubepods-besteffort-pod9.slice": not the container's, not stopped`
	if !strings.Contains(problems, want) {
		t.Errorf("release problems %q, want %q", problems, want)
	}
	if load, active, err := sd.UnitState(unit); err != nil || load != "loaded" || active != "active" {
		t.Errorf("the other slice's scope: %s/%s %v, want loaded/active", load, active, err)
	}
	if scope.ProcessState != nil {
		t.Errorf("the other slice's process exited: %v", scope.ProcessState)
	}
}

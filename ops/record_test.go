package ops

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
)

func TestDeleteRecord(t *testing.T) {
	rep := &deletion.Report{Namespace: "ns", ID: "x", Bundle: "/b/ns/x", Pid: 42, Duration: 30 * time.Millisecond, Steps: []deletion.StepReport{
		{Step: deletion.StepResolve, Outcome: deletion.OutcomeDone, Duration: time.Millisecond},
		{Step: deletion.StepRelease, Outcome: deletion.OutcomeFailed, Problems: []string{"remove cgroup /sys/fs/cgroup/x: device or resource busy"}},
		{Step: deletion.StepUnmount, Outcome: deletion.OutcomeFailed, Problems: []string{"/b/ns/x/rootfs still mounted"}},
	}}
	for _, tc := range []struct {
		err    error
		result Result
		left   int
	}{
		{nil, ResultIncomplete, 2},
		{fmt.Errorf("%w: /b/ns/x: a mount under it could not be removed", deletion.ErrUnsafe), ResultLeft, 3},
	} {
		rec := NewDeleteRecord(rep, tc.err, "", TriggerGC)
		if rec.Result != tc.result || len(rec.Left) != tc.left || rec.Pid != 42 || rec.DurationSeconds != 0.03 {
			t.Errorf("err %v: record %+v", tc.err, rec)
		}
		var back DeleteRecord
		if err := json.Unmarshal(rec.JSON(), &back); err != nil || !reflect.DeepEqual(back.Left, rec.Left) {
			t.Errorf("JSON round trip: %v", err)
		}
		if txt := rec.Text(); !strings.Contains(txt, "left:\n    release: remove cgroup") {
			t.Errorf("text lacks what was left:\n%s", txt)
		}
	}
	if r := ResultOf(&deletion.Report{}, nil); r != ResultDeleted {
		t.Errorf("clean report: %s", r)
	}
	if r := ResultOf(nil, fmt.Errorf("resolve: bad")); r != ResultError {
		t.Errorf("no report: %s", r)
	}
	// A refusal touched nothing: the shim step that refused is no step
	// done, and nothing is left by it.
	refused := &deletion.Report{Namespace: "ns", ID: "x", Bundle: "/b/ns/x", Steps: []deletion.StepReport{
		{Step: deletion.StepResolve, Outcome: deletion.OutcomeDone},
		{Step: deletion.StepShim, Outcome: deletion.OutcomeFailed, Problems: []string{"the task's shim is alive (answered)"}},
	}}
	if rec := NewDeleteRecord(refused, fmt.Errorf("%w (answered)", deletion.ErrShimAlive), "", TriggerGC); rec.Result != ResultRefused || len(rec.Steps) != 0 || len(rec.Left) != 0 || rec.Bundle != "/b/ns/x" || rec.Error == "" {
		t.Errorf("refused: record %+v", rec)
	}
	if rec := NewDeleteRecord(nil, nil, ResultRefused, TriggerManual); rec.Steps == nil || rec.Left == nil {
		t.Error("JSON slices must not be null")
	}
}

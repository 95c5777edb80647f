package deletion

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestForgedRuncStateNamesAnotherContainer: runc's state.json of the task
// names another container's init, with its true start time (the one case
// a start time cannot tell apart). The delete must not signal it, nor its
// cgroup's members:
//   - state paths copied from this container's cgroups: the init named is
//     not in them, so it is not this container's init;
//   - state paths naming the other container's cgroups: they are not the
//     ones config.json's cgroupsPath maps to, so the state is not used at
//     all (nor is the runtime, which would act on it).
//
// In both, this container's own process (in its own cgroup) is killed.
func TestForgedRuncStateNamesAnotherContainer(t *testing.T) {
	testutil.NeedRoot(t)
	for _, tc := range []struct {
		name         string
		pathsOfOther bool
	}{{"state paths are this container's", false}, {"state paths are the other container's", true}} {
		t.Run(tc.name, func(t *testing.T) {
			other := testutil.StartSleeper(t)
			otherRel := "/" + testutil.RandID("robust-hostiletest") + "/other"
			otherCgs := testutil.ContainerCgroup(t, otherRel, other.Process.Pid)

			id := testutil.RandID("forged")
			mine := testutil.StartSleeper(t)
			rel := "/" + testutil.RandID("robust-hostiletest") + "/" + id
			myCgs := testutil.ContainerCgroup(t, rel, mine.Process.Pid)

			paths := map[string]string{}
			named := myCgs
			if tc.pathsOfOther {
				named = otherCgs
			}
			for i, d := range named {
				paths[strconv.Itoa(i)] = d
			}
			root := t.TempDir()
			stateDir := filepath.Join(root, testNS, id)
			if err := os.MkdirAll(stateDir, 0o711); err != nil {
				t.Fatal(err)
			}
			writeJSONFile(t, filepath.Join(stateDir, "state.json"), map[string]any{
				"id": id, "init_process_pid": other.Process.Pid, "init_process_start": testutil.StartTime(t, other.Process.Pid),
				"created": time.Now(), "cgroup_paths": paths,
				"config": map[string]any{"cgroups": map[string]any{"path": rel}},
			})
			dir := testutil.TaskDir(t, id, map[string]string{
				"config.json":  testutil.SpecWithCgroup(t, rel),
				"options.json": `{"root":"` + root + `"}`,
				"runtime":      "/nonexistent/runc",
			})
			rep := mustDelete(t, dir, id)
			if !testutil.Alive(other.Process.Pid) {
				t.Fatalf("the other container's init %d was signalled", other.Process.Pid)
			}
			for _, d := range otherCgs {
				if _, err := os.Stat(d); err != nil {
					t.Errorf("the other container's cgroup %s was removed: %v", d, err)
				}
			}
			if !testutil.Poll(2*time.Second, 20*time.Millisecond, func() bool { return !testutil.Alive(mine.Process.Pid) }) {
				t.Errorf("this container's process %d survived:\n%s", mine.Process.Pid, rep.Text())
			}
			testutil.AssertGone(t, append([]string{dir, stateDir}, myCgs...)...)
		})
	}
}

// TestForgedRuncStateForTheRuntime: runc's state carries this task's own
// bundle label and cgroups, but names another process as its init, with
// its true start time, and a systemd unit (so the runtime's own delete
// would be run for it). The init named is not in the container's cgroups:
// the state is not used, and the runtime (`runc delete --force`, which
// kills the init it names) is never run. Seen in the production node with
// the systemd driver: the other container was killed by runc.
func TestForgedRuncStateForTheRuntime(t *testing.T) {
	testutil.NeedRoot(t)
	other := testutil.StartSleeper(t)
	id := testutil.RandID("forged")
	mine := testutil.StartSleeper(t)
	rel := "/" + testutil.RandID("robust-hostiletest") + "/" + id
	myCgs := testutil.ContainerCgroup(t, rel, mine.Process.Pid)
	paths := map[string]string{}
	for i, d := range myCgs {
		paths[strconv.Itoa(i)] = d
	}
	dir := testutil.TaskDir(t, id, nil)
	root := t.TempDir()
	stateDir := filepath.Join(root, testNS, id)
	if err := os.MkdirAll(stateDir, 0o711); err != nil {
		t.Fatal(err)
	}
	writeJSONFile(t, filepath.Join(stateDir, "state.json"), map[string]any{
		"id": id, "init_process_pid": other.Process.Pid, "init_process_start": testutil.StartTime(t, other.Process.Pid),
		"created": time.Now(), "cgroup_paths": paths,
		"config": map[string]any{"cgroups": map[string]any{"path": rel, "systemd": true}, "labels": []string{"bundle=" + dir}},
	})
	marker := filepath.Join(t.TempDir(), "runtime-ran")
	runtime := filepath.Join(t.TempDir(), "runc")
	if err := os.WriteFile(runtime, []byte("#!/bin/sh\necho \"$@\" >> "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"config.json":  testutil.SpecWithCgroup(t, rel),
		"options.json": `{"root":"` + root + `"}`,
		"runtime":      runtime,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rep := mustDelete(t, dir, id)
	if !testutil.Alive(other.Process.Pid) {
		t.Fatalf("the process %d the forged state names was signalled", other.Process.Pid)
	}
	if ran, err := os.ReadFile(marker); err == nil {
		t.Errorf("the runtime was run on a state that is not this container's: %s\n%s", ran, rep.Text())
	}
	if !testutil.Poll(2*time.Second, 20*time.Millisecond, func() bool { return !testutil.Alive(mine.Process.Pid) }) {
		t.Errorf("this container's process %d survived:\n%s", mine.Process.Pid, rep.Text())
	}
}

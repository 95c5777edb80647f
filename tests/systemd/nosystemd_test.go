package systemd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// TestNoSystemdOnHost: on a machine without systemd (this one, or any:
// /run/systemd is hidden from the delete), a by-hand
// delete of a task whose evidence says systemd (options SystemdCgroup, a
// "slice:prefix:name" cgroupsPath) reports that the unit could not be
// checked, and the cgroupfs path still kills the container's processes and
// removes its scope cgroup in every hierarchy.
func TestNoSystemdOnHost(t *testing.T) {
	id := testutil.RandID("nosd")
	pod := fmt.Sprintf("kubepods-besteffort-pod%d.slice", time.Now().UnixNano())
	rel := "/kubepods.slice/kubepods-besteffort.slice/" + pod + "/cri-containerd-" + id + ".scope"
	init := exec.Command("sh", "-c", "sleep 1000 & sleep 1001 & wait")
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = init.Process.Kill(); _ = init.Wait() })
	time.Sleep(50 * time.Millisecond) // let sh fork its children before moving them
	// Registered first, so it runs last, after ContainerCgroup's.
	t.Cleanup(func() {
		for _, m := range testutil.CgroupMounts(t) {
			_ = unix.Rmdir(filepath.Join(m, "kubepods.slice/kubepods-besteffort.slice"))
			_ = unix.Rmdir(filepath.Join(m, "kubepods.slice"))
		}
	})
	// v1 cpuset takes tasks only once cpus and mems are set all the way down.
	for _, m := range testutil.CgroupMounts(t) {
		p := m
		for _, part := range strings.Split(strings.Trim(filepath.Dir(filepath.Dir(rel)), "/"), "/") {
			p = filepath.Join(p, part)
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
					_ = os.WriteFile(filepath.Join(p, f), v, 0o644)
				}
			}
		}
	}
	dirs := testutil.ContainerCgroup(t, rel, init.Process.Pid)
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", init.Process.Pid, init.Process.Pid))
	var pids []int
	for _, f := range strings.Fields(string(kids)) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
		for _, d := range dirs {
			if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(pids) != 2 {
		t.Fatalf("want 2 children of init, got %q", kids)
	}
	dir := testutil.TaskDir(t, id, map[string]string{
		"config.json":  testutil.SpecWithCgroup(t, pod+":cri-containerd:"+id),
		"options.json": `{"systemd_cgroup":true}`,
		"init.pid":     strconv.Itoa(init.Process.Pid),
	})

	// In a mount namespace of its own whose /run/systemd, if the host has
	// one, is an empty tmpfs: a host without systemd, whatever this one is.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`[ -d /run/systemd ] && mount -t tmpfs tmpfs /run/systemd; exec "$@"`, "sh",
		env.ours, "-namespace", "robust-nosd", "-id", id, "-bundle", dir, "delete", "--format", "json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	t.Logf("record: %s", out)
	var rec struct {
		Result string `json:"result"`
		Steps  []struct {
			Step string   `json:"step"`
			Did  []string `json:"did"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(out, &rec); err != nil {
		t.Fatalf("record: %v", err)
	}
	var release string
	for _, s := range rec.Steps {
		if s.Step == "release" {
			release = strings.Join(s.Did, "; ")
		}
	}
	want := "systemd unit cri-containerd-" + id + ".scope could not be checked: systemd is not running"
	if !strings.Contains(release, want) {
		t.Errorf("release step did %q, want %q", release, want)
	}
	if rec.Result != "deleted" {
		t.Errorf("result %q, want deleted", rec.Result)
	}
	for _, pid := range append(pids, init.Process.Pid) {
		if testutil.Alive(pid) {
			t.Errorf("container process %d survived", pid)
		}
	}
	testutil.AssertGone(t, append(dirs, dir)...)
}

package deletion

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// runcContainer is a container run detached by the real runc, with what it
// owns on the machine.
type runcContainer struct {
	id, bundle, root, stateDir, hookLog string
	pid                                 int
	cgroups                             []string
}

// remains lists what is left of c: its state directory, its init, its
// cgroup directories, and how often its poststop hook ran.
func (c *runcContainer) remains() []string {
	var left []string
	if _, err := os.Stat(c.stateDir); err == nil {
		left = append(left, "runc state")
	}
	if testutil.Alive(c.pid) {
		left = append(left, "init process")
	}
	for _, d := range c.cgroups {
		if _, err := os.Stat(d); err == nil {
			left = append(left, "cgroup "+strings.TrimPrefix(d, "/sys/fs/cgroup/"))
		}
	}
	if data, err := os.ReadFile(c.hookLog); err == nil {
		left = append(left, fmt.Sprintf("poststop hook ran %d times", strings.Count(string(data), "\n")))
	}
	return left
}

func findRunc(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"runc", "/usr/sbin/runc"} {
		if r, err := exec.LookPath(p); err == nil {
			return r
		}
	}
	t.Fatal("runc is not installed (make deps installs Debian's runc)")
	return ""
}

// runRunc runs a container with the real runc: `sleep` from the host's
// /usr (bind-mounted read-only), cgroupfs path /<id>, optionally a
// poststop hook that appends a line to hookLog. The task directory it
// makes is what containerd's runc shim writes: config.json, runtime,
// options.json (the runc root), init.pid.
func runRunc(t *testing.T, runc, ns, id string, hook bool) *runcContainer {
	t.Helper()
	tmp := t.TempDir()
	// containerd's layout: the evidence that it is a task directory
	// (bundle.CheckTaskDir).
	c := &runcContainer{id: id, bundle: filepath.Join(tmp, "io.containerd.runtime.v2.task", ns, id), root: filepath.Join(tmp, "runc-root"), hookLog: filepath.Join(tmp, "hook.log")}
	c.stateDir = filepath.Join(c.root, ns, id)
	if err := os.MkdirAll(filepath.Join(c.bundle, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	specDir := t.TempDir()
	if out, err := exec.Command(runc, "spec", "--bundle", specDir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	var spec specs.Spec
	data, err := os.ReadFile(filepath.Join(specDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Root = &specs.Root{Path: "rootfs", Readonly: true}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/usr/bin/sleep", "1000"}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		if m.Type != "cgroup" {
			mounts = append(mounts, m)
		}
	}
	spec.Mounts = append(mounts, specs.Mount{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}})
	spec.Linux.CgroupsPath = "/" + id
	spec.Linux.Resources = nil
	if hook {
		spec.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo ran >> " + c.hookLog}}}}
	}
	writeJSONFile(t, filepath.Join(c.bundle, "config.json"), &spec)
	writeJSONFile(t, filepath.Join(c.bundle, "options.json"), map[string]string{"root": c.root})
	if err := os.WriteFile(filepath.Join(c.bundle, "runtime"), []byte(runc), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(tmp, "run.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, runc, "--root", filepath.Join(c.root, ns), "run", "--detach", "--bundle", c.bundle,
		"--pid-file", filepath.Join(c.bundle, "init.pid"), id)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("runc run: %v: %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command(runc, "--root", filepath.Join(c.root, ns), "delete", "--force", id).Run()
	})
	pidData, err := os.ReadFile(filepath.Join(c.bundle, "init.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if c.pid, err = strconv.Atoi(strings.TrimSpace(string(pidData))); err != nil {
		t.Fatal(err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	data, err = os.ReadFile(filepath.Join(c.stateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	for _, d := range st.CgroupPaths {
		if _, err := os.Stat(d); err == nil {
			c.cgroups = append(c.cgroups, d)
		}
	}
	if len(c.cgroups) == 0 {
		t.Fatalf("runc's container %s has no cgroup directory: %v", id, st.CgroupPaths)
	}
	return c
}

func writeJSONFile(t *testing.T, p string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNativeFinishMatchesRuncDelete runs pairs of identical containers
// with the real runc on this host's cgroups (v1 hierarchies and the
// unified one): one is deleted by the delete path, the other by runc's own
// `delete --force`. What remains must be the same: nothing, and for a
// container with a poststop hook, the hook run exactly once. Without
// hooks the delete path must not run runc at all (it finishes natively);
// with one, it must (only runc runs hooks).
func TestNativeFinishMatchesRuncDelete(t *testing.T) {
	testutil.NeedRoot(t)
	runc := findRunc(t)
	for _, tc := range []struct {
		name       string
		hook       bool
		wantDidSub string
	}{
		{"cgroupfs, no hooks", false, "finished natively"},
		{"cgroupfs, poststop hook", true, "delete --force (poststop hooks)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours := runRunc(t, runc, testNS, testutil.RandID("native-ours"), tc.hook)
			theirs := runRunc(t, runc, testNS, testutil.RandID("native-runc"), tc.hook)

			rep, err := Delete(context.Background(), Request{Namespace: testNS, ID: ours.id, Bundle: ours.bundle})
			if err != nil {
				t.Fatalf("delete: %v\n%s", err, rep.Text())
			}
			var did []string
			for _, s := range rep.Steps {
				did = append(did, s.Did...)
			}
			if !strings.Contains(strings.Join(did, "; "), tc.wantDidSub) {
				t.Errorf("the delete path did %q, want %q", did, tc.wantDidSub)
			}
			if out, err := exec.Command(runc, "--root", filepath.Join(theirs.root, testNS), "delete", "--force", theirs.id).CombinedOutput(); err != nil {
				t.Fatalf("runc delete --force: %v: %s", err, out)
			}
			// runc delete --force waits for its SIGKILL; let both settle.
			var got, want []string
			testutil.Poll(3*time.Second, 20*time.Millisecond, func() bool {
				got, want = ours.remains(), theirs.remains()
				return strings.Join(got, ",") == strings.Join(want, ",")
			})
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("after the delete path: %q; after runc delete --force: %q", got, want)
			}
			wantLeft := []string(nil)
			if tc.hook {
				wantLeft = []string{"poststop hook ran 1 times"}
			}
			if strings.Join(got, ",") != strings.Join(wantLeft, ",") {
				t.Errorf("left %q, want %q", got, wantLeft)
			}
		})
	}
}

// TestRuntimeOwns: what only runc can release sends the delete through it.
func TestRuntimeOwns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state string // state.json content, "" for none
		want  string
	}{
		{"no state", "", "runc's state could not be read"},
		{"plain", `{"id":"x","config":{"cgroups":{"path":"/x"}}}`, ""},
		{"poststop", `{"id":"x","config":{"cgroups":{"path":"/x"},"Hooks":{"poststop":[{"path":"/bin/true"}]}}}`, "poststop hooks"},
		{"prestart only", `{"id":"x","config":{"cgroups":{"path":"/x"},"Hooks":{"prestart":[{"path":"/bin/true"}]}}}`, ""},
		{"systemd", `{"id":"x","config":{"cgroups":{"Systemd":true,"name":"x"}}}`, "a systemd unit"},
		{"rdt group", `{"id":"x","intel_rdt_path":"/sys/fs/resctrl/x","config":{"cgroups":{"path":"/x"}}}`, "an Intel RDT group"},
		{"rdt config", `{"id":"x","config":{"cgroups":{"path":"/x"},"intel_rdt":{"closID":"c"}}}`, "an Intel RDT group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &deletion{b: loadState(t, tc.state)}
			if got := d.runtimeOwns(); got != tc.want {
				t.Errorf("runtimeOwns() = %q, want %q", got, tc.want)
			}
		})
	}
}

// loadState is a Bundle holding the runc state decoded from state ("" for
// none).
func loadState(t *testing.T, state string) *bundle.Bundle {
	t.Helper()
	b := &bundle.Bundle{}
	if state != "" {
		var st bundle.RuncState
		if err := json.Unmarshal([]byte(state), &st); err != nil {
			t.Fatal(err)
		}
		b.State = &st
	}
	return b
}

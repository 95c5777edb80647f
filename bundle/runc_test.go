package bundle

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestLoadRealRunc has the real runc create a container (left in the
// "created" state: its init waits on the exec fifo, nothing runs) in the
// fixture's bundle and runc root, writing init.pid itself, and checks that
// Load reads runc's own state.json and pid file. runc is optional on the
// machine's (Debian's); TestLoadRuncState covers runc 1.3's format.
func TestLoadRealRunc(t *testing.T) {
	requireRoot(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/runc"); serr != nil {
			t.Fatal("runc is not installed (make deps installs Debian's runc)")
		}
		runc = "/usr/sbin/runc"
	}
	f := newFixture(t)
	f.writeAll(t)
	f.remove(t, InitPidFile)
	if err := os.RemoveAll(filepath.Dir(f.statePath(f.runcRoot))); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, f.path(ConfigFile), runcSpec(t, runc, f))
	mkdir(t, f.path(RootfsDir))

	root := filepath.Join(f.runcRoot, f.ns)
	// runc init inherits the container's stdio and outlives create: give
	// it a file, not a pipe CombinedOutput would wait on until it exits.
	logPath := filepath.Join(t.TempDir(), "create.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	create := exec.CommandContext(ctx, runc, "--root", root, "create", "--bundle", f.dir,
		"--pid-file", f.path(InitPidFile), f.id)
	create.Stdout, create.Stderr = logFile, logFile
	err = create.Run()
	t.Cleanup(func() {
		if out, err := exec.Command(runc, "--root", root, "delete", "--force", f.id).CombinedOutput(); err != nil {
			t.Errorf("cleanup: runc delete: %v: %s", err, out)
		}
	})
	if err != nil {
		out, _ := os.ReadFile(logPath)
		t.Fatalf("runc create: %v: %s", err, out)
	}

	b, err := Load(f.dir, f.ns, f.id)
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, b.Problems, nil)
	if b.State == nil || b.State.ID != f.id {
		t.Fatalf("State = %+v", b.State)
	}
	if b.InitPid <= 0 || b.State.InitProcessPid != b.InitPid {
		t.Errorf("init.pid %d, state.json pid %d", b.InitPid, b.State.InitProcessPid)
	}
	if b.State.InitProcessStartTime == 0 || b.State.Config.Cgroups == nil || len(b.State.CgroupPaths) == 0 {
		t.Errorf("state start time %d, cgroups %+v, cgroup paths %v: runc's state.json not decoded",
			b.State.InitProcessStartTime, b.State.Config.Cgroups, b.State.CgroupPaths)
	}
	if b.Spec == nil || b.Spec.Root == nil || b.Spec.Root.Path != RootfsDir {
		t.Errorf("Spec = %+v", b.Spec)
	}
}

// runcSpec is a minimal spec runc can create here: the host's /usr
// read-only in an empty rootfs, no cgroup filesystem mount.
func runcSpec(t *testing.T, runc string, f *fixture) *specs.Spec {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Root = &specs.Root{Path: RootfsDir, Readonly: true}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/usr/bin/sleep", "100"}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		if m.Type != "cgroup" {
			mounts = append(mounts, m)
		}
	}
	spec.Mounts = append(mounts, specs.Mount{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}})
	// One level, so runc delete removes all of it.
	spec.Linux.CgroupsPath = "/bundletest-" + strconv.Itoa(os.Getpid())
	return &spec
}

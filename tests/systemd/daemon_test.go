package systemd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// daemon is a private containerd run by the private systemd as a transient
// service (Delegate=yes, KillMode=process, as containerd.service ships):
// stopping it leaves the shims running. Its directories are in the shared
// directory, so the test reaches its socket and task directories.
type daemon struct {
	spec   daemonSpec
	sd     *harness.Systemd
	dir    string
	root   string
	state  string // containerd state; task directories below TaskState
	addr   string
	config string
	bin    string
	log    string
	unit   string // the current run's unit
	starts int
	client *containerd.Client
}

// TaskState is containerd's runtime v2 task directory root of d.
func (d *daemon) TaskState() string { return filepath.Join(d.state, "io.containerd.runtime.v2.task") }

// newDaemon prepares a daemon for spec with our shim and upstream's
// installed under their runtime names, and starts it.
func newDaemon(t *testing.T, spec daemonSpec) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp(env.sd.Dir, "containerd-"+spec.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		spec: spec, sd: env.sd, dir: dir,
		root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		addr: filepath.Join(dir, "containerd.sock"), config: filepath.Join(dir, "config.toml"),
		bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "containerd.log"),
	}
	for _, p := range []string{d.root, d.state, d.bin} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	for runtime, src := range map[string]string{harness.RuntimeRobust: env.ours, harness.RuntimeUpstream: spec.upstream} {
		if err := harness.CopyFile(src, filepath.Join(d.bin, harness.ShimBinaryName(runtime)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// containerd too: inside the private systemd's namespace /tmp is a
	// tmpfs of its own, and the repository (so bin/containerd-X.Y) may lie
	// under it; the shared directory is seen at the same path.
	if err := harness.CopyFile(spec.containerd, filepath.Join(d.bin, "containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := harness.BaseConfig(d.root, d.state, d.addr, d.addr+".ttrpc", "io.containerd.grpc.v1.cri")
	if err := os.WriteFile(d.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("stop containerd %s: %v", spec.name, err)
		}
	})
	return d
}

// start runs containerd as a new transient service and waits (60 s) until
// it serves.
func (d *daemon) start(ctx context.Context) error {
	d.starts++
	d.unit = fmt.Sprintf("robust-containerd-%s-%d.service", strings.ReplaceAll(d.spec.name, ".", ""), d.starts)
	path := d.bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if _, err := d.sd.Output(ctx, "systemd-run", "--unit="+d.unit, "--collect",
		"-p", "Delegate=yes", "-p", "KillMode=process", "-p", "DefaultDependencies=no",
		"-p", "StandardOutput=append:"+d.log, "-p", "StandardError=append:"+d.log,
		"--setenv=PATH="+path, "--working-directory="+d.dir,
		filepath.Join(d.bin, "containerd"), "--config", d.config); err != nil {
		return err
	}
	var lastErr error
	ok := harness.Poll(60*time.Second, 50*time.Millisecond, func() bool {
		if _, err := os.Stat(d.addr); err != nil {
			lastErr = err
			return false
		}
		c, err := containerd.New(d.addr, containerd.WithTimeout(2*time.Second))
		if err != nil {
			lastErr = err
			return false
		}
		if _, err := c.Version(ctx); err != nil {
			c.Close()
			lastErr = err
			return false
		}
		d.client = c
		return true
	})
	if !ok {
		return fmt.Errorf("containerd %s (%s) did not serve within 60s: %v\n--- log ---\n%s", d.spec.name, d.unit, lastErr, harness.TailFile(d.log, 30))
	}
	return nil
}

// stop stops the service (SIGTERM to containerd alone) and waits until the
// unit is no longer active.
func (d *daemon) stop() error {
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
	if d.unit == "" {
		return nil
	}
	if _, err := d.sd.Output(context.Background(), "systemctl", "stop", d.unit); err != nil {
		return err
	}
	unit := d.unit
	d.unit = ""
	if !harness.Poll(20*time.Second, 50*time.Millisecond, func() bool {
		_, active, err := d.sd.UnitState(unit)
		return err == nil && active != "active" && active != "deactivating"
	}) {
		return fmt.Errorf("%s still active 20s after stop", unit)
	}
	if err := os.Remove(d.addr); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// restart stops and starts containerd again (a new service, same
// configuration): at start it runs the delete of every task whose shim is
// dead.
func (d *daemon) restart(ctx context.Context) error {
	if err := d.stop(); err != nil {
		return err
	}
	return d.start(ctx)
}

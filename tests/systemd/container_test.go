package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/systemdunit"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// namespace is the containerd namespace of every container (CRI's).
const namespace = "k8s.io"

// markers makes every container's processes unique on the machine: its
// init is `sh -c "sleep M & sleep M1 & wait"`, so every one of its
// processes has M in its command line.
var markers atomic.Int64

func init() { markers.Store(3000000) }

// ctr is one container with runc's systemd driver, in the scope unit its
// cgroupsPath names.
type ctr struct {
	d       *daemon
	id      string
	runtime string
	cgPath  string
	unit    systemdunit.Unit
	marker  string
	rootfs  string
}

func (c *ctr) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, namespace)
}

// bundle is the container's task directory.
func (c *ctr) bundle() string { return filepath.Join(c.d.TaskState(), namespace, c.id) }

// runcState is runc's state directory, inside the private systemd's /run,
// reached through its root.
func (c *ctr) runcState() string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", c.d.sd.Pid), "run/containerd/runc", namespace, c.id)
}

// hostCgroup is the scope's cgroup as the host sees it.
func (c *ctr) hostCgroup() string { return c.d.sd.HostCgroup(c.unit.Path) }

// run starts a container with runtime, id and a kubelet-style cgroupsPath
// in pod slice pod, through containerd's Go client, with runc's systemd
// cgroup driver and no resource limits (the unified hierarchy has no
// controllers on these hosts).
func (d *daemon) run(ctx context.Context, runtime, id string, pod int) (*ctr, error) {
	cgPath := fmt.Sprintf("kubepods-besteffort-pod%d.slice:cri-containerd:%s", pod, id)
	unit, err := systemdunit.FromEvidence(systemdunit.Evidence{CgroupsPath: cgPath, Systemd: true})
	if err != nil {
		return nil, err
	}
	c := &ctr{d: d, id: id, runtime: runtime, cgPath: cgPath, unit: unit,
		marker: strconv.FormatInt(markers.Add(10), 10)}
	dir, err := os.MkdirTemp(d.dir, "rootfs-"+id+"-")
	if err != nil {
		return nil, err
	}
	c.rootfs = filepath.Join(dir, "rootfs")
	if err := harness.BuildRootfs(c.rootfs, env.busybox); err != nil {
		return nil, err
	}
	ctx = c.ctx(ctx)
	noResources := func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux != nil {
			s.Linux.Resources = nil
		}
		return nil
	}
	cont, err := d.client.NewContainer(ctx, id,
		containerd.WithRuntime(runtime, &options.Options{SystemdCgroup: true}),
		containerd.WithNewSpec(oci.WithDefaultPathEnv, oci.WithHostname(id),
			oci.WithProcessArgs("sh", "-c", fmt.Sprintf("sleep %s & sleep %s1 & wait", c.marker, c.marker)),
			oci.WithCgroup(cgPath), noResources))
	if err != nil {
		return nil, fmt.Errorf("new container %s: %w", id, err)
	}
	task, err := cont.NewTask(ctx, cio.NullIO, containerd.WithRootFS([]mount.Mount{{
		Type: "bind", Source: c.rootfs, Options: []string{"rbind", "rw"},
	}}))
	if err != nil {
		_ = cont.Delete(ctx)
		return nil, fmt.Errorf("new task %s (%s): %w", id, runtime, err)
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		_ = cont.Delete(ctx)
		return nil, fmt.Errorf("start task %s (%s): %w", id, runtime, err)
	}
	// The init and its two children, all in the scope.
	if !harness.Poll(10*time.Second, 20*time.Millisecond, func() bool { return len(c.procs()) >= 3 }) {
		return c, fmt.Errorf("container %s: want 3 processes with marker %s, have %v", id, c.marker, c.procs())
	}
	return c, nil
}

// procs are the host pids whose command line holds the container's marker.
func (c *ctr) procs() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), c.marker) {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && isZombie(st) {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(stat []byte) bool {
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// inOwnScope checks that every process of the container is in the cgroup
// of its scope unit, and that systemd has the unit loaded and active.
func (c *ctr) inOwnScope() error {
	pids := c.procs()
	if len(pids) == 0 {
		return errors.New("no process")
	}
	want := filepath.Join(strings.TrimPrefix(c.d.sd.CgroupDir, "/sys/fs/cgroup/unified"), c.unit.Path)
	want = strings.TrimPrefix(want, "/sys/fs/cgroup")
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			return err
		}
		var got string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "0::") {
				got = strings.TrimPrefix(line, "0::")
			}
		}
		if got != want {
			return fmt.Errorf("pid %d is in cgroup %q, not its scope's %q", pid, got, want)
		}
	}
	load, active, err := c.d.sd.UnitState(c.unit.Name)
	if err != nil {
		return err
	}
	if load != "loaded" || active != "active" {
		return fmt.Errorf("unit %s is %s/%s, want loaded/active", c.unit.Name, load, active)
	}
	return nil
}

// shimPid is the host pid of the container's shim: in the private
// systemd's pid namespace, a containerd-shim-runc-v2* with "-id <id>".
func (c *ctr) shimPid() (int, error) {
	sdNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.d.sd.Pid))
	if err != nil {
		return 0, err
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-runc-v2") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-id" && args[i+1] == c.id {
				if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); ns == sdNS {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no shim process for %s", c.id)
}

// killShim SIGKILLs the container's shim and waits (10 s) until it is gone.
func (c *ctr) killShim() error {
	pid, err := c.shimPid()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if !harness.Poll(10*time.Second, 10*time.Millisecond, func() bool {
		_, err := c.shimPid()
		return err != nil
	}) {
		return fmt.Errorf("shim %d of %s alive 10s after SIGKILL", pid, c.id)
	}
	return nil
}

// residue is what is left of the container, by kind; empty when clean.
func (c *ctr) residue() []string {
	var left []string
	if n := len(c.procs()); n > 0 {
		left = append(left, fmt.Sprintf("process ×%d", n))
	}
	if _, err := os.Stat(c.hostCgroup()); err == nil {
		left = append(left, "scope cgroup")
	}
	load, active, err := c.d.sd.UnitState(c.unit.Name)
	switch {
	case err != nil:
		left = append(left, "unit state unknown: "+err.Error())
	case load != "not-found":
		left = append(left, fmt.Sprintf("unit %s/%s", load, active))
	}
	if _, err := os.Stat(c.bundle()); err == nil {
		left = append(left, "task directory")
	}
	if _, err := os.Stat(c.runcState()); err == nil {
		left = append(left, "runc state")
	}
	return left
}

// waitDeleted waits (bounded) until containerd ran the shim's delete and
// the task directory is gone, and every process of the container with it.
func (c *ctr) waitDeleted(timeout time.Duration) bool {
	if !harness.Poll(timeout, 50*time.Millisecond, func() bool {
		_, err := os.Stat(c.bundle())
		return os.IsNotExist(err)
	}) {
		return false
	}
	return harness.Poll(2*time.Second, 20*time.Millisecond, func() bool { return len(c.procs()) == 0 })
}

// forget removes containerd's record of the container (its task, if
// containerd still has one, first), so that the id can be used again.
func (c *ctr) forget(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(c.ctx(ctx), 15*time.Second)
	defer cancel()
	if c.d.client == nil {
		return errors.New("containerd is not running")
	}
	// Through the daemon's current client: it may have restarted.
	cont, err := c.d.client.LoadContainer(ctx, c.id)
	if err != nil {
		return err
	}
	if t, err := cont.Task(ctx, nil); err == nil {
		// containerd.WithProcessKill waits without a bound.
		if exited, err := t.Wait(ctx); err == nil {
			if err := t.Kill(ctx, syscall.SIGKILL); err == nil {
				select {
				case <-exited:
				case <-ctx.Done():
				}
			}
		}
		_, _ = t.Delete(ctx)
	}
	return cont.Delete(ctx)
}

// scrub removes by force whatever a case left (upstream's shim leaves a
// lot): the processes, the unit, the cgroup, the task directory's mount,
// runc's state, the task directory, containerd's record.
func (c *ctr) scrub(ctx context.Context) {
	for _, pid := range c.procs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	harness.Poll(5*time.Second, 20*time.Millisecond, func() bool { return len(c.procs()) == 0 })
	_, _ = c.d.sd.Output(ctx, "systemctl", "stop", c.unit.Name)
	_, _ = c.d.sd.Output(ctx, "systemctl", "reset-failed", c.unit.Name)
	_ = syscall.Rmdir(c.hostCgroup())
	_, _ = c.d.sd.Output(ctx, "umount", "-R", "-l", filepath.Join(c.bundle(), "rootfs"))
	_ = os.RemoveAll(c.runcState())
	if ms := harness.MountsUnder([]int{c.d.sd.Pid}, c.bundle()); len(ms) == 0 {
		_ = os.RemoveAll(c.bundle())
	}
	_ = c.forget(ctx)
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

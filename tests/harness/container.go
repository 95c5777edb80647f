package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
)

// DefaultArgs is an init with two children that never exit by themselves.
var DefaultArgs = []string{"sh", "-c", "sleep 1000000 & sleep 1000001 & wait"}

// DefaultExecArgs is the exec'd process.
var DefaultExecArgs = []string{"sleep", "1000002"}

// DefaultRuncRoot is the runc root of containerd's runc shims when the
// runtime options set none; runc's state is at <root>/<namespace>/<id>.
const DefaultRuncRoot = "/run/containerd/runc"

// ContainerConfig describes one container to run.
type ContainerConfig struct {
	Namespace string
	ID        string
	Runtime   string // RuntimeRobust or RuntimeUpstream
	Busybox   string // static busybox binary for the rootfs
	Args      []string
	ExecArgs  []string
	// NoResources strips the spec's linux.resources (for the pure cgroup2
	// view, which has no controllers on a hybrid host).
	NoResources bool
	// PoststopHook gives the container an OCI poststop hook: a /bin/sh
	// script on the host, in Container.Dir, that appends a line to HookRuns at each
	// run telling whether the bundle's config.json and rootfs existed (and
	// the rootfs was still mounted) then. See Container.PoststopHookRuns.
	PoststopHook bool
}

// Container is a running container and the record of everything it owns on
// the machine, taken right after it started.
type Container struct {
	d   *Daemon
	Cfg ContainerConfig

	Dir    string // per-container temp dir: rootfs source, bind sources
	Rootfs string // rootfs source, bind-mounted by the shim into the bundle

	Bundle    string // <state>/io.containerd.runtime.v2.task/<ns>/<id>
	WorkDir   string // <root>/io.containerd.runtime.v2.task/<ns>/<id>
	RuncState string // <runc root>/<ns>/<id>

	Shim       Proc   // the init's parent, checked by its command line
	ShimSocket string // path of the shim's socket: `address` (1.x) or bootstrap.json (2.x)
	ShimExe    string // the binary of the process serving the task (/proc/<shim>/exe)

	Init    Proc
	Exec    Proc
	Procs   []Proc   // every process in the container's cgroups at start
	Cgroups []string // the container's cgroup directory in every hierarchy

	HookRuns string // file the poststop hook appends to; "" without one

	binds     map[string]snapshot // bind source -> its files at record time
	container containerd.Container
}

// Context returns ctx with the container's namespace.
func (c *Container) Context(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.Cfg.Namespace)
}

// Daemon is the daemon the container was started on.
func (c *Container) Daemon() *Daemon { return c.d }

// taskDir is the runtime v2 task directory below base.
func taskDir(base, ns, id string) string {
	return filepath.Join(base, "io.containerd.runtime.v2.task", ns, id)
}

// Run creates and starts a container on the daemon through containerd's Go
// client, execs one process in it, and records it. On error everything it
// created is cleaned up.
func (d *Daemon) Run(ctx context.Context, cfg ContainerConfig) (*Container, error) {
	if cfg.Args == nil {
		cfg.Args = DefaultArgs
	}
	if cfg.ExecArgs == nil {
		cfg.ExecArgs = DefaultExecArgs
	}
	client := d.Client()
	if client == nil {
		return nil, fmt.Errorf("run %s: containerd is not running", cfg.ID)
	}
	c := &Container{
		d:         d,
		Cfg:       cfg,
		Dir:       filepath.Join(d.Dir, "cases", cfg.Namespace, cfg.ID),
		Bundle:    taskDir(d.State, cfg.Namespace, cfg.ID),
		WorkDir:   taskDir(d.Root, cfg.Namespace, cfg.ID),
		RuncState: filepath.Join(DefaultRuncRoot, cfg.Namespace, cfg.ID),
		binds:     map[string]snapshot{},
	}
	c.Rootfs = filepath.Join(c.Dir, "rootfs")
	if err := c.start(ctx, client); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := c.Cleanup(cctx); cerr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, cerr)
		}
		return nil, fmt.Errorf("run %s/%s with %s: %w", cfg.Namespace, cfg.ID, cfg.Runtime, err)
	}
	return c, nil
}

func (c *Container) start(ctx context.Context, client *containerd.Client) error {
	cfg := c.Cfg
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	if err := BuildRootfs(c.Rootfs, cfg.Busybox); err != nil {
		return err
	}
	snap, err := takeSnapshot(c.Rootfs)
	if err != nil {
		return err
	}
	c.binds[c.Rootfs] = snap

	ctx = c.Context(ctx)
	specOpts := []oci.SpecOpts{oci.WithDefaultPathEnv, oci.WithProcessArgs(cfg.Args...), oci.WithHostname(cfg.ID)}
	if cfg.NoResources {
		specOpts = append(specOpts, func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Linux != nil {
				s.Linux.Resources = nil
			}
			return nil
		})
	}
	if cfg.PoststopHook {
		hook, runs, err := poststopHook(c.Dir)
		if err != nil {
			return err
		}
		c.HookRuns = runs
		specOpts = append(specOpts, withPoststopHook(hook))
	}
	specOpts = append(specOpts, withCgroupDriver(cfg.Namespace, cfg.ID))
	runtimeOpts, err := runtimeOptions()
	if err != nil {
		return err
	}
	ctr, err := client.NewContainer(ctx, cfg.ID,
		containerd.WithRuntime(cfg.Runtime, runtimeOpts),
		containerd.WithNewSpec(specOpts...))
	if err != nil {
		return fmt.Errorf("new container: %w", err)
	}
	c.container = ctr
	task, err := ctr.NewTask(ctx, cio.NullIO, containerd.WithRootFS([]mount.Mount{{
		Type:    "bind",
		Source:  c.Rootfs,
		Options: []string{"rbind", "rw"},
	}}))
	if err != nil {
		return fmt.Errorf("new task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("start task: %w", err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return err
	}
	pspec := *spec.Process
	pspec.Args = cfg.ExecArgs
	proc, err := task.Exec(ctx, "exec-1", &pspec, cio.NullIO)
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if err := proc.Start(ctx); err != nil {
		return fmt.Errorf("start exec: %w", err)
	}
	return c.record(int(task.Pid()), int(proc.Pid()))
}

// record takes the container's record right after start.
func (c *Container) record(initPid, execPid int) error {
	var err error
	for _, p := range []string{c.Bundle, c.WorkDir, c.RuncState} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	if target, err := os.Readlink(filepath.Join(c.Bundle, "work")); err != nil || filepath.Clean(target) != c.WorkDir {
		return fmt.Errorf("record: work link %q (%v), want %s", target, err, c.WorkDir)
	}
	// runc-v2 shims write no shim.pid (only the v1 shim did): the shim is
	// the init's parent (it is a subreaper and runc create has exited),
	// proven by its command line naming the container.
	shimPid, err := shimOf(initPid, c.Cfg.ID)
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if c.Shim, err = RecordProc(shimPid); err != nil {
		return fmt.Errorf("record shim: %w", err)
	}
	if c.ShimSocket, err = shimSocket(c.Bundle); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if c.ShimExe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", shimPid)); err != nil {
		return fmt.Errorf("record shim binary: %w", err)
	}
	if c.Init, err = RecordProc(initPid); err != nil {
		return fmt.Errorf("record init: %w", err)
	}
	if c.Exec, err = RecordProc(execPid); err != nil {
		return fmt.Errorf("record exec: %w", err)
	}
	if c.Cgroups, err = ContainerCgroups(initPid, shimPid); err != nil {
		return fmt.Errorf("record cgroups: %w", err)
	}
	if len(c.Cgroups) == 0 {
		return fmt.Errorf("record: init %d is in no cgroup of its own", initPid)
	}
	// The init's children may not have forked yet: wait (bounded) until the
	// cgroups hold init, both children and the exec'd process.
	want := 2 + 2
	var pids map[int]bool
	ok := Poll(10*time.Second, 20*time.Millisecond, func() bool {
		pids = map[int]bool{}
		for _, dir := range c.Cgroups {
			for _, p := range CgroupPids(dir) {
				pids[p] = true
			}
		}
		return len(pids) >= want && pids[initPid] && pids[execPid]
	})
	if !ok {
		return fmt.Errorf("record: cgroups %v hold pids %v, want init %d, exec %d and %d in all", c.Cgroups, pids, initPid, execPid, want)
	}
	c.Procs = nil
	for p := range pids {
		pr, err := RecordProc(p)
		if err != nil {
			return fmt.Errorf("record pid %d: %w", p, err)
		}
		c.Procs = append(c.Procs, pr)
	}
	return nil
}

// shimOf returns the parent of initPid after checking that its command line
// is a shim's for id ("-id <id>").
func shimOf(initPid int, id string) (int, error) {
	st, err := readStat(initPid)
	if err != nil {
		return 0, err
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PPid))
	if err != nil {
		return 0, fmt.Errorf("shim (parent %d of init %d): %w", st.PPid, initPid, err)
	}
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-id" && args[i+1] == id {
			return st.PPid, nil
		}
	}
	return 0, fmt.Errorf("parent %d of init %d is not the shim of %s: %q", st.PPid, initPid, id, args)
}

// KillShim SIGKILLs the shim (verified by start time) and waits until it
// is gone (bounded).
func (c *Container) KillShim() error {
	if err := c.Shim.Kill(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if left := WaitGone(ctx, []Proc{c.Shim}); len(left) > 0 {
		return fmt.Errorf("shim %s still alive 10s after SIGKILL", c.Shim)
	}
	return nil
}

// WaitTaskGone waits (bounded by timeout) until containerd no longer knows
// the container's task.
func (c *Container) WaitTaskGone(ctx context.Context, timeout time.Duration) bool {
	return Poll(timeout, 50*time.Millisecond, func() bool {
		known, err := c.TaskKnown(ctx)
		return err == nil && !known
	})
}

// shimSocket reads the shim's socket path from the task directory as
// containerd 2.x writes it (bootstrap.json) or 1.6/1.7 do (address).
func shimSocket(bundle string) (string, error) {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var b struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			return "", fmt.Errorf("bootstrap.json: %w", err)
		}
		return strings.TrimPrefix(b.Address, "unix://"), nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(strings.TrimSpace(string(data)), "unix://"), nil
}

package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/namespaces"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// ContainerArgs is each container's command: an init with two children
// that never exit by themselves.
var ContainerArgs = []string{"/bin/sh", "-c", "sleep 1000000 & sleep 1000001 & wait"}

// ContainerNames are the two containers of every pod.
var ContainerNames = []string{"app", "sidecar"}

// RequestTimeout bounds every CRI call.
const RequestTimeout = 60 * time.Second

// PodConfig describes one pod to run.
type PodConfig struct {
	Name    string // pod name, also its uid's base; unique per daemon
	Handler string // RuntimeClass handler: HandlerRobust or HandlerRunc
	// CgroupParent is the pod's cgroup parent (cgroupfs style, as kubelet's
	// cgroupfs driver passes it); runc creates it.
	CgroupParent string
}

// Task is one of the pod's containerd tasks (the sandbox or a container)
// and everything it owns on the machine.
type Task struct {
	ID        string
	Role      string // "sandbox" or the container's name
	Bundle    string // <state>/io.containerd.runtime.v2.task/k8s.io/<id>
	WorkDir   string // <root>/io.containerd.runtime.v2.task/k8s.io/<id>
	RuncState string // /run/containerd/runc/k8s.io/<id>
	Init      harness.Proc
	Cgroups   []string // the task's cgroup directory in every hierarchy
}

// Pod is a pod sandbox with two containers run through CRI, and the record
// taken right after they started.
type Pod struct {
	d   *Daemon
	Cfg PodConfig

	SandboxConfig *runtimeapi.PodSandboxConfig
	SandboxID     string
	ContainerIDs  []string // in ContainerNames order

	Tasks      []*Task        // sandbox first
	Shims      []harness.Proc // the pod's shim(s): parents of the tasks' inits
	ShimExes   []string       // /proc/<shim>/exe of each
	ShimSocket []string       // sockets named in the tasks' `address` (1.x) or bootstrap.json (2.x)
	Procs      []harness.Proc // every process in the tasks' cgroups at start
}

// Daemon is the daemon the pod runs on.
func (p *Pod) Daemon() *Daemon { return p.d }

// runtime is the daemon's CRI runtime client, or an error when the daemon
// is not running.
func (p *Pod) runtime() (runtimeapi.RuntimeServiceClient, error) {
	rt := p.d.Runtime()
	if rt == nil {
		return nil, fmt.Errorf("pod %s: containerd is not running", p.Cfg.Name)
	}
	return rt, nil
}

func (p *Pod) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(ctx, Namespace), RequestTimeout)
}

// NewPod makes the pod's record; RunPod fills it. It is separate so that a
// test can register the pod's Cleanup before anything is created.
func (d *Daemon) NewPod(cfg PodConfig) *Pod {
	nsOpts := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
	return &Pod{d: d, Cfg: cfg, SandboxConfig: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{
			Name:      cfg.Name,
			Uid:       "uid-" + cfg.Name,
			Namespace: "cri-e2e",
		},
		Labels: map[string]string{"cri-e2e": cfg.Name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    cfg.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOpts},
		},
	}}
}

// Run makes the calls kubelet makes to start the pod: RunPodSandbox with
// the handler (host network, no hostname), then CreateContainer and
// StartContainer for each container; then it records what the pod owns.
// On error the record holds whatever was created, for Cleanup.
func (p *Pod) Run(ctx context.Context) error {
	rt, err := p.runtime()
	if err != nil {
		return err
	}
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	sb, err := rt.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: p.SandboxConfig, RuntimeHandler: p.Cfg.Handler})
	if err != nil {
		return fmt.Errorf("RunPodSandbox %s (handler %s): %w", p.Cfg.Name, p.Cfg.Handler, err)
	}
	p.SandboxID = sb.PodSandboxId
	for _, name := range ContainerNames {
		cr, err := rt.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: p.SandboxID,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: name},
				Image:    &runtimeapi.ImageSpec{Image: ImageRef},
				Command:  ContainerArgs,
				Labels:   map[string]string{"cri-e2e": p.Cfg.Name},
				Linux: &runtimeapi.LinuxContainerConfig{
					SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
						NamespaceOptions: p.SandboxConfig.Linux.SecurityContext.NamespaceOptions,
					},
				},
			},
			SandboxConfig: p.SandboxConfig,
		})
		if err != nil {
			return fmt.Errorf("CreateContainer %s/%s: %w", p.Cfg.Name, name, err)
		}
		p.ContainerIDs = append(p.ContainerIDs, cr.ContainerId)
		if _, err := rt.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			return fmt.Errorf("StartContainer %s/%s: %w", p.Cfg.Name, name, err)
		}
	}
	return p.record(ctx)
}

func (d *Daemon) task(id, role string) *Task {
	return &Task{
		ID:        id,
		Role:      role,
		Bundle:    filepath.Join(d.State, "io.containerd.runtime.v2.task", Namespace, id),
		WorkDir:   filepath.Join(d.Root, "io.containerd.runtime.v2.task", Namespace, id),
		RuncState: filepath.Join(harness.DefaultRuncRoot, Namespace, id),
	}
}

// record takes the pod's record: each task's directories and init (from
// containerd), the shim (the init's parent, proven by its command line
// naming the sandbox), the cgroups and every process in them.
func (p *Pod) record(ctx context.Context) error {
	client := p.d.Client()
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	p.Tasks = []*Task{p.d.task(p.SandboxID, "sandbox")}
	for i, id := range p.ContainerIDs {
		p.Tasks = append(p.Tasks, p.d.task(id, ContainerNames[i]))
	}
	shims := map[int]bool{}
	sockets := map[string]bool{}
	for _, t := range p.Tasks {
		for _, dir := range []string{t.Bundle, t.WorkDir, t.RuncState} {
			if _, err := os.Stat(dir); err != nil {
				return fmt.Errorf("record %s: %w", t.Role, err)
			}
		}
		ctr, err := client.LoadContainer(cctx, t.ID)
		if err != nil {
			return fmt.Errorf("record %s: %w", t.Role, err)
		}
		task, err := ctr.Task(cctx, nil)
		if err != nil {
			return fmt.Errorf("record %s: task: %w", t.Role, err)
		}
		if t.Init, err = harness.RecordProc(int(task.Pid())); err != nil {
			return fmt.Errorf("record %s init: %w", t.Role, err)
		}
		shimPid, err := shimOf(t.Init.Pid, p.SandboxID)
		if err != nil {
			return fmt.Errorf("record %s: %w", t.Role, err)
		}
		if !shims[shimPid] {
			shims[shimPid] = true
			shim, err := harness.RecordProc(shimPid)
			if err != nil {
				return fmt.Errorf("record shim: %w", err)
			}
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", shimPid))
			if err != nil {
				return fmt.Errorf("record shim exe: %w", err)
			}
			p.Shims = append(p.Shims, shim)
			p.ShimExes = append(p.ShimExes, exe)
		}
		s, err := shimSocket(t.Bundle)
		if err != nil {
			return fmt.Errorf("record %s: %w", t.Role, err)
		}
		if !sockets[s] {
			sockets[s] = true
			p.ShimSocket = append(p.ShimSocket, s)
		}
		if t.Cgroups, err = harness.ContainerCgroups(t.Init.Pid, shimPid); err != nil {
			return fmt.Errorf("record %s cgroups: %w", t.Role, err)
		}
		if len(t.Cgroups) == 0 {
			return fmt.Errorf("record %s: init %d is in no cgroup of its own", t.Role, t.Init.Pid)
		}
	}
	// The containers' inits may not have forked their children yet: wait
	// (bounded) until the cgroups hold the sandbox's process and three per
	// container.
	want := 1 + 3*len(p.ContainerIDs)
	var pids map[int]bool
	ok := harness.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		pids = map[int]bool{}
		for _, t := range p.Tasks {
			for _, dir := range t.Cgroups {
				for _, pid := range harness.CgroupPids(dir) {
					pids[pid] = true
				}
			}
		}
		return len(pids) >= want
	})
	if !ok {
		return fmt.Errorf("record: the pod's cgroups hold pids %v, want %d", pids, want)
	}
	p.Procs = nil
	for pid := range pids {
		pr, err := harness.RecordProc(pid)
		if err != nil {
			return fmt.Errorf("record pid %d: %w", pid, err)
		}
		p.Procs = append(p.Procs, pr)
	}
	return nil
}

// shimSocket reads the shim's socket path from a task directory as
// containerd 2.x writes it (bootstrap.json) or 1.6/1.7 do (address).
func shimSocket(bundleDir string) (string, error) {
	var addr string
	if data, err := os.ReadFile(filepath.Join(bundleDir, bundle.BootstrapFile)); err == nil {
		var b bundle.Bootstrap
		if err := json.Unmarshal(data, &b); err != nil {
			return "", fmt.Errorf("%s: %w", bundle.BootstrapFile, err)
		}
		addr = b.Address
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	} else {
		data, err := os.ReadFile(filepath.Join(bundleDir, bundle.AddressFile))
		if err != nil {
			return "", fmt.Errorf("neither %s nor %s: %w", bundle.BootstrapFile, bundle.AddressFile, err)
		}
		addr = strings.TrimSpace(string(data))
	}
	if !strings.HasPrefix(addr, "unix://") || len(addr) == len("unix://") {
		return "", fmt.Errorf("shim address %q in %s is not unix://PATH", addr, bundleDir)
	}
	return strings.TrimPrefix(addr, "unix://"), nil
}

// shimOf returns the parent of initPid after checking that its command line
// is a shim's for the sandbox ("-id <sandboxID>"): a runc v2 shim serves
// every task of a pod and is started for its sandbox.
func shimOf(initPid int, sandboxID string) (int, error) {
	ppid, err := parentOf(initPid)
	if err != nil {
		return 0, err
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid))
	if err != nil {
		return 0, fmt.Errorf("shim (parent %d of init %d): %w", ppid, initPid, err)
	}
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-id" && args[i+1] == sandboxID {
			return ppid, nil
		}
	}
	return 0, fmt.Errorf("parent %d of init %d is not the shim of sandbox %s: %q", ppid, initPid, sandboxID, args)
}

// KillShims SIGKILLs the pod's shims (verified by start time) and waits
// (bounded) until they are gone.
func (p *Pod) KillShims() error {
	for _, s := range p.Shims {
		if err := s.Kill(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if left := harness.WaitGone(ctx, p.Shims); len(left) > 0 {
		return fmt.Errorf("shims %v still alive 10s after SIGKILL", left)
	}
	return nil
}

// RemoveTaskFile removes one file (e.g. harness.RuntimeFile) from every
// task directory of the pod.
func (p *Pod) RemoveTaskFile(name string) error {
	for _, t := range p.Tasks {
		if err := os.Remove(filepath.Join(t.Bundle, name)); err != nil {
			return err
		}
	}
	return nil
}

// States is what CRI reports for the pod: the sandbox's state and each
// container's state and exit code.
type States struct {
	Sandbox    runtimeapi.PodSandboxState
	Containers []runtimeapi.ContainerState
	ExitCodes  []int32
	Reasons    []string
}

// Down reports whether CRI sees the pod as dead: sandbox NOTREADY and every
// container EXITED.
func (s States) Down() bool {
	if s.Sandbox != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		return false
	}
	for _, c := range s.Containers {
		if c != runtimeapi.ContainerState_CONTAINER_EXITED {
			return false
		}
	}
	return true
}

// Up reports whether CRI sees the pod running: sandbox READY and every
// container RUNNING.
func (s States) Up() bool {
	if s.Sandbox != runtimeapi.PodSandboxState_SANDBOX_READY {
		return false
	}
	for _, c := range s.Containers {
		if c != runtimeapi.ContainerState_CONTAINER_RUNNING {
			return false
		}
	}
	return len(s.Containers) == len(ContainerNames)
}

func (s States) String() string {
	parts := []string{"sandbox " + strings.TrimPrefix(s.Sandbox.String(), "SANDBOX_")}
	for i, c := range s.Containers {
		st := strings.TrimPrefix(c.String(), "CONTAINER_")
		if c == runtimeapi.ContainerState_CONTAINER_EXITED {
			st += fmt.Sprintf("(%d", s.ExitCodes[i])
			if s.Reasons[i] != "" {
				st += " " + s.Reasons[i]
			}
			st += ")"
		}
		parts = append(parts, ContainerNames[i]+" "+st)
	}
	return strings.Join(parts, ", ")
}

// States asks CRI (PodSandboxStatus, ContainerStatus) how the pod is.
func (p *Pod) States(ctx context.Context) (States, error) {
	rt, err := p.runtime()
	if err != nil {
		return States{}, err
	}
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	var s States
	sb, err := rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.SandboxID})
	if err != nil {
		return s, fmt.Errorf("PodSandboxStatus: %w", err)
	}
	s.Sandbox = sb.GetStatus().GetState()
	for i, id := range p.ContainerIDs {
		cs, err := rt.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return s, fmt.Errorf("ContainerStatus %s: %w", ContainerNames[i], err)
		}
		s.Containers = append(s.Containers, cs.GetStatus().GetState())
		s.ExitCodes = append(s.ExitCodes, cs.GetStatus().GetExitCode())
		s.Reasons = append(s.Reasons, cs.GetStatus().GetReason())
	}
	return s, nil
}

// WaitDown polls CRI (bounded by timeout) until the pod is Down; it
// returns the last states seen and how long it took.
func (p *Pod) WaitDown(ctx context.Context, timeout time.Duration) (States, time.Duration, error) {
	start := time.Now()
	var (
		s       States
		lastErr error
	)
	ok := harness.Poll(timeout, 50*time.Millisecond, func() bool {
		s, lastErr = p.States(ctx)
		return lastErr == nil && s.Down()
	})
	if !ok {
		return s, time.Since(start), fmt.Errorf("pod not down after %s: %s (last error: %v)", timeout, s, lastErr)
	}
	return s, time.Since(start), nil
}

// SandboxInfo is the verbose PodSandboxStatus info CRI returns ("info" as
// JSON), decoded loosely: runtimeHandler, runtimeType, pid...
func (p *Pod) SandboxInfo(ctx context.Context) (map[string]any, error) {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	rt, err := p.runtime()
	if err != nil {
		return nil, err
	}
	sb, err := rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.SandboxID, Verbose: true})
	if err != nil {
		return nil, err
	}
	info := map[string]any{}
	if raw, ok := sb.GetInfo()["info"]; ok {
		if err := json.Unmarshal([]byte(raw), &info); err != nil {
			return nil, fmt.Errorf("sandbox info: %w", err)
		}
	}
	return info, nil
}

// ExecSync runs cmd in container i through CRI's ExecSync (bounded by
// timeout) and returns its stdout, stderr and exit code.
func (p *Pod) ExecSync(ctx context.Context, i int, cmd []string, timeout time.Duration) (string, string, int32, error) {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	rt, err := p.runtime()
	if err != nil {
		return "", "", -1, err
	}
	resp, err := rt.ExecSync(cctx, &runtimeapi.ExecSyncRequest{
		ContainerId: p.ContainerIDs[i],
		Cmd:         cmd,
		Timeout:     int64(timeout / time.Second),
	})
	if err != nil {
		return "", "", -1, err
	}
	return string(resp.Stdout), string(resp.Stderr), resp.ExitCode, nil
}

// Stop calls StopPodSandbox.
func (p *Pod) Stop(ctx context.Context) error {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	rt, err := p.runtime()
	if err != nil {
		return err
	}
	_, err = rt.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.SandboxID})
	return err
}

// Remove calls RemovePodSandbox (which removes the containers too).
func (p *Pod) Remove(ctx context.Context) error {
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	rt, err := p.runtime()
	if err != nil {
		return err
	}
	_, err = rt.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.SandboxID})
	return err
}

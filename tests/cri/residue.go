package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Kinds of leftovers beyond harness's: records that containerd or its CRI
// plugin still keep for a removed pod.
const (
	KindShim      = "shim"
	KindCRIRecord = "CRI record"
	KindContainer = "containerd container"
	KindSnapshot  = "snapshot"
	KindCRIDir    = "CRI dir"
)

var kindOrder = []string{
	harness.KindBundle, harness.KindWorkDir, harness.KindRuncState, KindShim, harness.KindProcess,
	harness.KindCgroup, harness.KindMount, harness.KindSocket, KindContainer, KindSnapshot, KindCRIRecord, KindCRIDir,
}

// Summary is a one-line digest of r: "clean", or the kinds with counts in a
// fixed order, any kind it does not know last.
func Summary(r harness.Residue) string { return r.SummaryIn(kindOrder) }

func dotted(p string) string { return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)) }

// criDirs are the CRI plugin's own directories for the pod's sandbox and
// containers, in its root and state directories.
func (p *Pod) criDirs() []string {
	var dirs []string
	for _, base := range []string{p.d.Root, p.d.State} {
		cri := filepath.Join(base, "io.containerd.grpc.v1.cri")
		if p.SandboxID != "" {
			dirs = append(dirs, filepath.Join(cri, "sandboxes", p.SandboxID))
		}
		for _, id := range p.ContainerIDs {
			dirs = append(dirs, filepath.Join(cri, "containers", id))
		}
	}
	return dirs
}

// tasks returns the recorded tasks, or — when the record was never taken
// (Run failed half-way) — records made from the ids alone.
func (p *Pod) tasks() []*Task {
	if len(p.Tasks) > 0 {
		return p.Tasks
	}
	var ts []*Task
	if p.SandboxID != "" {
		ts = append(ts, p.d.task(p.SandboxID, "sandbox"))
	}
	for i, id := range p.ContainerIDs {
		ts = append(ts, p.d.task(id, ContainerNames[i]))
	}
	return ts
}

// Residue is everything left of the pod after its removal: per task its
// task and work directories (also under containerd's ".<id>" names), runc
// state, cgroups and mounts under its task directory; the pod's shims and
// every recorded process (pid and start time; a zombie counts as gone); the
// shims' sockets; and — when the daemon runs — containerd's container
// records and snapshots and CRI's sandbox and container records, and CRI's
// own directories and mounts of the pod.
func (p *Pod) Residue(ctx context.Context) harness.Residue {
	var r harness.Residue
	add := func(kind, what string) { r = append(r, harness.Leftover{Kind: kind, What: what}) }
	// exists probes a path: only ENOENT (or ENOTDIR: a parent is no longer
	// a directory) is gone; any other error (EACCES, EIO) is not known to
	// be gone and fails the check as a harness.KindProbe leftover.
	exists := func(p string) bool {
		switch _, err := os.Lstat(p); {
		case err == nil:
			return true
		case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ENOTDIR):
			return false
		default:
			add(harness.KindProbe, fmt.Sprintf("%s: %v", p, err))
			return false
		}
	}
	var mountDirs []string
	for _, t := range p.tasks() {
		for _, d := range []string{t.Bundle, dotted(t.Bundle)} {
			if exists(d) {
				add(harness.KindBundle, d)
			}
		}
		for _, d := range []string{t.WorkDir, dotted(t.WorkDir)} {
			if exists(d) {
				add(harness.KindWorkDir, d)
			}
		}
		if exists(t.RuncState) {
			add(harness.KindRuncState, t.RuncState)
		}
		for _, d := range t.Cgroups {
			if exists(d) {
				add(harness.KindCgroup, d)
			}
		}
		mountDirs = append(mountDirs, t.Bundle, dotted(t.Bundle))
	}
	for _, s := range p.Shims {
		if s.Alive() {
			add(KindShim, s.String())
		}
	}
	for _, pr := range p.Procs {
		if pr.Alive() {
			add(harness.KindProcess, pr.String())
		}
	}
	for _, m := range harness.MountsUnder([]int{0}, append(mountDirs, p.criDirs()...)...) {
		add(harness.KindMount, m)
	}
	for _, s := range p.ShimSocket {
		if exists(s) {
			add(harness.KindSocket, s)
		}
	}
	for _, d := range p.criDirs() {
		if exists(d) {
			add(KindCRIDir, d)
		}
	}
	client, rt := p.d.Client(), p.d.Runtime()
	if !p.d.Running() || client == nil || rt == nil {
		return r
	}
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	for _, t := range p.tasks() {
		if _, err := client.LoadContainer(cctx, t.ID); !errdefs.IsNotFound(err) {
			add(KindContainer, fmt.Sprintf("%s %s (%v)", t.Role, t.ID, errOrFound(err)))
		}
		if _, err := client.SnapshotService(Snapshotter).Stat(cctx, t.ID); !errdefs.IsNotFound(err) {
			add(KindSnapshot, fmt.Sprintf("%s %s (%v)", t.Role, t.ID, errOrFound(err)))
		}
	}
	if p.SandboxID != "" {
		_, err := rt.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.SandboxID})
		if status.Code(err) != codes.NotFound {
			add(KindCRIRecord, fmt.Sprintf("sandbox %s (%v)", p.SandboxID, errOrFound(err)))
		}
	}
	for i, id := range p.ContainerIDs {
		_, err := rt.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if status.Code(err) != codes.NotFound {
			add(KindCRIRecord, fmt.Sprintf("container %s %s (%v)", ContainerNames[i], id, errOrFound(err)))
		}
	}
	return r
}

func errOrFound(err error) string {
	if err == nil {
		return "found"
	}
	return err.Error()
}

// WaitClean polls (bounded by timeout) until the residue is empty and
// returns the last residue seen: empty on success.
func (p *Pod) WaitClean(ctx context.Context, timeout time.Duration) harness.Residue {
	var r harness.Residue
	harness.Poll(timeout, 50*time.Millisecond, func() bool {
		r = p.Residue(ctx)
		return len(r) == 0
	})
	return r
}

// Cleanup removes whatever is left of the pod, whatever a case did or
// failed to do, so that later cases start from a clean machine: it asks CRI
// to stop and remove the pod, kills the shims, the recorded processes and
// anything else in the tasks' cgroups, unmounts everything under the task
// directories and CRI's directories of the pod, removes the cgroups, the
// directories (never through a mount that would not go) and the sockets,
// then asks CRI again and has containerd forget what CRI could not remove.
func (p *Pod) Cleanup(ctx context.Context) error {
	var errs []error
	removeViaCRI := func() error {
		if !p.d.Running() || p.SandboxID == "" {
			return nil
		}
		if err := p.Stop(ctx); err != nil && status.Code(err) != codes.NotFound {
			return fmt.Errorf("StopPodSandbox: %w", err)
		}
		if err := p.Remove(ctx); err != nil && status.Code(err) != codes.NotFound {
			return fmt.Errorf("RemovePodSandbox: %w", err)
		}
		return nil
	}
	_ = removeViaCRI() // retried below, once the machine is tidy

	tasks := p.tasks()
	procs := append(append([]harness.Proc(nil), p.Shims...), p.Procs...)
	for _, t := range tasks {
		for _, dir := range t.Cgroups {
			for _, pid := range harness.CgroupPids(dir) {
				if pr, err := harness.RecordProc(pid); err == nil {
					procs = append(procs, pr)
				}
			}
		}
	}
	for _, pr := range procs {
		if err := pr.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if left := harness.WaitGone(wctx, procs); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes alive after SIGKILL: %v", left))
	}
	cancel()

	var dirs []string
	for _, t := range tasks {
		dirs = append(dirs, t.Bundle, dotted(t.Bundle))
	}
	dirs = append(dirs, p.criDirs()...)
	for _, m := range harness.MountsUnder([]int{0}, dirs...) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	mountsLeft := harness.MountsUnder([]int{0}, dirs...)
	if len(mountsLeft) > 0 {
		errs = append(errs, fmt.Errorf("mounts left: %v", mountsLeft))
	}

	var cgs []string
	for _, t := range tasks {
		cgs = append(cgs, t.Cgroups...)
	}
	if err := removeCgroups(cgs); err != nil {
		errs = append(errs, err)
	}

	if len(mountsLeft) == 0 {
		for _, t := range tasks {
			for _, d := range []string{t.Bundle, dotted(t.Bundle), t.WorkDir, dotted(t.WorkDir), t.RuncState} {
				if err := os.RemoveAll(d); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, s := range p.ShimSocket {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}

	if err := removeViaCRI(); err != nil {
		errs = append(errs, err)
	}
	if client := p.d.Client(); client != nil {
		cctx, cancel := p.ctx(ctx)
		for _, t := range tasks {
			ctr, err := client.LoadContainer(cctx, t.ID)
			if err != nil {
				continue
			}
			if task, err := ctr.Task(cctx, nil); err == nil {
				_, _ = task.Delete(cctx, containerd.WithProcessKill)
			}
			if err := ctr.Delete(cctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete container %s: %w", t.ID, err))
			}
		}
		cancel()
	}
	return errors.Join(errs...)
}

// removeCgroups removes cgroup directories, deepest first, retried
// (bounded) while their last members exit.
func removeCgroups(dirs []string) error {
	dirs = append([]string(nil), dirs...)
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		var err error
		harness.Poll(5*time.Second, 20*time.Millisecond, func() bool {
			err = unix.Rmdir(d)
			return err == nil || errors.Is(err, unix.ENOENT)
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// RemoveCgroupTree removes the cgroup rel (e.g. the pods' common cgroup
// parent) and everything below it in every hierarchy mounted here, after
// killing (pidfd, start time checked) every process still in it. It is
// suite-level tidying: a pod's removal does not remove its cgroup parent.
func RemoveCgroupTree(rel string) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	var dirs []string
	var procs []harness.Proc
	for _, m := range ms {
		root := filepath.Join(m.Mountpoint, rel)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, pid := range harness.CgroupPids(root) {
			if pr, err := harness.RecordProc(pid); err == nil {
				procs = append(procs, pr)
			}
		}
	}
	var errs []error
	for _, pr := range procs {
		if err := pr.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if left := harness.WaitGone(ctx, procs); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes in %s alive after SIGKILL: %v", rel, left))
	}
	return errors.Join(append(errs, removeCgroups(dirs))...)
}

func cgroupMounts() ([]*mountinfo.Info, error) {
	return mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.FSType != "cgroup" && m.FSType != "cgroup2", false
	})
}

// parentOf reads pid's parent from /proc/<pid>/stat (fields counted from
// the last ')', as comm may hold anything).
func parentOf(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("stat of pid %d: malformed %q", pid, data)
	}
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("stat of pid %d: malformed %q", pid, data)
	}
	return strconv.Atoi(f[1])
}

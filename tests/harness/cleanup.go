package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Cleanup removes whatever is left of the container, whatever a case did
// or failed to do, so that later cases start from a clean machine: it kills
// the recorded processes still alive and anything else in the container's
// cgroups, kills the shim, unmounts everything under the bundle and the
// container's temp dir (in every mount namespace involved), removes the
// cgroup directories, forgets the task and container in containerd, and
// removes the directories — never through a mount that would not go.
func (c *Container) Cleanup(ctx context.Context) error {
	var errs []error

	// containerd first, so that nothing renames the bundle under our feet:
	// a live shim deletes its task the normal way; for a dead one containerd
	// runs the shim's delete and bundle removal itself, so wait (bounded)
	// until it has forgotten the task.
	forget := func() {
		client := c.d.Client()
		if client == nil || c.container == nil {
			return
		}
		cctx, cancel := context.WithTimeout(c.Context(ctx), 15*time.Second)
		defer cancel()
		if c.Shim.Pid > 0 && c.Shim.Alive() {
			if task, err := c.container.Task(cctx, nil); err == nil {
				_, _ = task.Delete(cctx, containerd.WithProcessKill)
			}
		}
		c.WaitTaskGone(cctx, 15*time.Second)
	}
	forget()

	// Processes: the recorded ones, then anything still in the cgroups (a
	// cgroup member is a container process by construction).
	procs := append([]Proc{c.Shim}, c.Procs...)
	for _, dir := range c.Cgroups {
		for _, pid := range CgroupPids(dir) {
			if p, err := RecordProc(pid); err == nil {
				procs = append(procs, p)
			}
		}
	}
	shimWasAlive := c.Shim.Pid > 0 && c.Shim.Alive()
	for _, p := range procs {
		if p.Pid > 0 {
			if err := p.Kill(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if left := WaitGone(wctx, nonZero(procs)); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes alive after SIGKILL: %v", left))
	}
	cancel()
	if shimWasAlive {
		forget() // containerd now cleans up after the shim we killed
	}
	if client := c.d.Client(); client != nil && c.container != nil {
		cctx, cancel := context.WithTimeout(c.Context(ctx), 10*time.Second)
		if err := client.ContainerService().Delete(cctx, c.Cfg.ID); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete container metadata: %w", err))
		}
		cancel()
	}

	// Mounts, deepest first, detached if busy; repeated (bounded) in case
	// a path moved (containerd renames a bundle to .<id> before removing it).
	dirs := []string{c.Bundle, dotted(c.Bundle), c.Dir}
	var mountsLeft []string
	Poll(5*time.Second, 20*time.Millisecond, func() bool {
		for _, m := range MountsUnder(c.d.mountNSPids(), dirs...) {
			_ = unix.Unmount(m, unix.MNT_DETACH)
			if c.d.CgroupV2View() && c.d.Pid() > 0 {
				_ = c.d.inMountNS("umount", "-l", m)
			}
		}
		mountsLeft = MountsUnder(c.d.mountNSPids(), dirs...)
		return len(mountsLeft) == 0
	})
	if len(mountsLeft) > 0 {
		errs = append(errs, fmt.Errorf("mounts left: %v", mountsLeft))
	}

	// Cgroups, deepest first, retried while the last members exit.
	cgs := append([]string(nil), c.Cgroups...)
	sort.Slice(cgs, func(i, j int) bool { return len(cgs[i]) > len(cgs[j]) })
	for _, d := range cgs {
		var err error
		Poll(5*time.Second, 20*time.Millisecond, func() bool {
			err = unix.Rmdir(d)
			return err == nil || errors.Is(err, unix.ENOENT)
		})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", d, err))
		}
	}

	// Directories and the socket; never through a mount.
	if len(mountsLeft) == 0 {
		for _, p := range []string{c.Bundle, dotted(c.Bundle), c.WorkDir, dotted(c.WorkDir), c.RuncState, c.Dir} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.ShimSocket != "" {
		if err := os.Remove(c.ShimSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func nonZero(procs []Proc) []Proc {
	var out []Proc
	for _, p := range procs {
		if p.Pid > 0 {
			out = append(out, p)
		}
	}
	return out
}

// RemoveNamespaceCgroups removes the per-namespace parent cgroup ("/<ns>")
// that runc creates above each container's cgroup, in every cgroup
// hierarchy mounted here, when it is empty. It is suite-level tidying: a
// delete is not expected to remove it.
func RemoveNamespaceCgroups(ns string) error {
	ms, err := readMountinfo(0)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if m.FSType != "cgroup" && m.FSType != "cgroup2" {
			continue
		}
		p := filepath.Join(m.MountPoint, ns)
		if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

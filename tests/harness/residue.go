package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
)

// Kinds of leftovers, in the order Summary prints them.
const (
	KindBundle     = "bundle"
	KindWorkDir    = "work dir"
	KindRuncState  = "runc state"
	KindProcess    = "process"
	KindCgroup     = "cgroup"
	KindMount      = "mount"
	KindSocket     = "shim socket"
	KindTask       = "task"
	KindBindSource = "bind source"
	// KindProbe is a thing that could not be looked at: a probe that
	// failed otherwise than with ENOENT (EACCES, EIO, ...). It is not known
	// to be gone, so it fails the residue check like a leftover.
	KindProbe = "probe failed"
)

var kindOrder = []string{KindBindSource, KindBundle, KindWorkDir, KindRuncState, KindProcess, KindCgroup, KindMount, KindSocket, KindTask, KindProbe}

// Leftover is one thing of a container still on the machine after its
// delete.
type Leftover struct {
	Kind string
	What string
}

func (l Leftover) String() string { return l.Kind + ": " + l.What }

// Residue is everything left of a container; empty when it is all gone.
type Residue []Leftover

// Of returns the leftovers of one kind.
func (r Residue) Of(kind string) Residue {
	var out Residue
	for _, l := range r {
		if l.Kind == kind {
			out = append(out, l)
		}
	}
	return out
}

// Summary is a one-line digest: "clean", or the kinds with counts, e.g.
// "bundle, runc state, process ×4, cgroup ×10".
func (r Residue) Summary() string { return r.SummaryIn(kindOrder) }

// SummaryIn is Summary with the kinds in the given order, any kind not in
// order last (in the order first seen).
func (r Residue) SummaryIn(order []string) string {
	if len(r) == 0 {
		return "clean"
	}
	n := map[string]int{}
	for _, l := range r {
		n[l.Kind]++
	}
	order = append([]string(nil), order...)
	for _, l := range r {
		known := false
		for _, k := range order {
			known = known || k == l.Kind
		}
		if !known {
			order = append(order, l.Kind)
		}
	}
	var parts []string
	for _, k := range order {
		switch {
		case n[k] == 1:
			parts = append(parts, k)
		case n[k] > 1:
			parts = append(parts, fmt.Sprintf("%s ×%d", k, n[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func (r Residue) String() string {
	if len(r) == 0 {
		return "nothing left"
	}
	lines := make([]string, len(r))
	for i, l := range r {
		lines[i] = "  " + l.String()
	}
	return strings.Join(lines, "\n")
}

// lstat and stat are the probes Residue uses; variables so that a test can
// make a probe fail as EACCES or EIO would.
var (
	lstat = os.Lstat
	stat  = os.Stat
)

// dotted is containerd's atomicDelete name for a path being removed: the
// same directory with "." before the base name.
func dotted(p string) string { return filepath.Join(filepath.Dir(p), "."+filepath.Base(p)) }

// Residue checks what is left of the container: bundle, work dir (also
// under containerd's ".<id>" names for a half-done atomic delete), runc
// state, every recorded process (pid and start time; a zombie counts as
// gone), cgroup directories, mounts under the bundle (in every mount
// namespace involved), the shim's socket, files changed in any bind source,
// and — when checkTask and the daemon is running — the task in containerd.
// Only ENOENT (ESRCH for a process) means gone: a probe that fails
// otherwise (EACCES, EIO, a malformed /proc/<pid>/stat) is a KindProbe
// leftover, so that a thing that could not be looked at never reads as
// gone.
func (c *Container) Residue(ctx context.Context, checkTask bool) Residue {
	var r Residue
	add := func(kind, what string) { r = append(r, Leftover{kind, what}) }
	srcs := make([]string, 0, len(c.binds))
	for src := range c.binds {
		srcs = append(srcs, src)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		for _, d := range c.binds[src].diff(src) {
			add(KindBindSource, d)
		}
	}
	// exists probes a path: only ENOENT (or ENOTDIR: a parent is no longer
	// a directory) is gone; any other error is reported as a failed probe.
	exists := func(kind, p string, stat func(string) (os.FileInfo, error)) {
		switch _, err := stat(p); {
		case err == nil:
			add(kind, p)
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		default:
			add(KindProbe, fmt.Sprintf("%s %s: %v", kind, p, err))
		}
	}
	for _, p := range []string{c.Bundle, dotted(c.Bundle)} {
		exists(KindBundle, p, lstat)
	}
	for _, p := range []string{c.WorkDir, dotted(c.WorkDir)} {
		exists(KindWorkDir, p, lstat)
	}
	exists(KindRuncState, c.RuncState, lstat)
	for _, p := range c.Procs {
		switch alive, err := p.probe(); {
		case err != nil:
			add(KindProbe, fmt.Sprintf("%s %s: %v", KindProcess, p, err))
		case alive:
			add(KindProcess, p.String())
		}
	}
	for _, d := range c.Cgroups {
		exists(KindCgroup, d, stat)
	}
	for _, m := range MountsUnder(c.d.mountNSPids(), c.Bundle, dotted(c.Bundle)) {
		add(KindMount, m)
	}
	if c.ShimSocket != "" {
		exists(KindSocket, c.ShimSocket, lstat)
	}
	if checkTask && c.d.Running() {
		known, err := c.TaskKnown(ctx)
		switch {
		case err != nil:
			add(KindTask, "unknown: "+err.Error())
		case known:
			add(KindTask, c.Cfg.Namespace+"/"+c.Cfg.ID)
		}
	}
	return r
}

// TaskKnown asks containerd whether it still has the container's task.
func (c *Container) TaskKnown(ctx context.Context) (bool, error) {
	client := c.d.Client()
	if client == nil {
		return false, errors.New("containerd is not running")
	}
	ctx, cancel := context.WithTimeout(c.Context(ctx), 5*time.Second)
	defer cancel()
	ctr, err := client.LoadContainer(ctx, c.Cfg.ID)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	if _, err := ctr.Task(ctx, nil); err != nil {
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// WaitClean polls (bounded by timeout) until the residue is empty and
// returns the last residue seen: empty on success.
func (c *Container) WaitClean(ctx context.Context, timeout time.Duration, checkTask bool) Residue {
	var r Residue
	Poll(timeout, 50*time.Millisecond, func() bool {
		r = c.Residue(ctx, checkTask)
		return len(r) == 0
	})
	return r
}

// WaitSettled polls (bounded by timeout) until the residue is empty or has
// not changed for stable, and returns the last residue seen. It is for a
// shim whose residue is only reported, never asserted: what it leaves
// usually stays, and waiting the whole timeout for it would only slow the
// suite.
func (c *Container) WaitSettled(ctx context.Context, timeout, stable time.Duration, checkTask bool) Residue {
	var (
		r     Residue
		last  string
		since time.Time
	)
	Poll(timeout, 50*time.Millisecond, func() bool {
		r = c.Residue(ctx, checkTask)
		if len(r) == 0 {
			return true
		}
		if s := r.String(); s != last {
			last, since = s, time.Now()
			return false
		}
		return time.Since(since) >= stable
	})
	return r
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// shimKind is one of the two shims compared.
type shimKind struct {
	Name    string // "ours" or "upstream"
	Runtime string // runtime name containerd resolves to Binary
	Binary  string
}

// bench is the run on one containerd line: its configuration, the line,
// the two shims, and the namespace prefix that keeps its containers apart
// from anyone else's.
type bench struct {
	cfg      config
	line     line
	ours     shimKind
	upstream shimKind
	prefix   string
}

// newBench is the run on line l. Both shims are installed in each daemon's
// bin directory under their own names, as containerd's packages install
// them: ours finds upstream's there (next to itself) as its delegate, so
// the delegate is always the baseline of the same line.
func newBench(cfg config, l line) *bench {
	return &bench{
		cfg:      cfg,
		line:     l,
		ours:     shimKind{Name: "ours", Runtime: harness.RuntimeRobust, Binary: cfg.Ours},
		upstream: shimKind{Name: "upstream", Runtime: harness.RuntimeUpstream, Binary: l.Upstream},
		prefix:   fmt.Sprintf("bench%d-c%s", os.Getpid(), strings.ReplaceAll(l.Name, ".", "")),
	}
}

// pair is both shims in the order of round i: ours first in even rounds,
// upstream first in odd ones, so that a drift of the machine during a
// phase weighs on both alike.
func (b *bench) pair(i int) [2]shimKind {
	if i%2 == 0 {
		return [2]shimKind{b.ours, b.upstream}
	}
	return [2]shimKind{b.upstream, b.ours}
}

// fleet is one phase's daemon and every container the phase made on it;
// close removes all of it.
type fleet struct {
	b  *bench
	d  *harness.Daemon
	ns string

	mu sync.Mutex
	cs []*harness.Container
}

// newFleet makes and starts a private containerd with both shims installed,
// for the phase named phase (its containerd namespace).
func (b *bench) newFleet(ctx context.Context, phase string) (*fleet, error) {
	d, err := harness.StartDaemon(ctx, harness.DaemonConfig{
		Binary: b.line.Containerd,
		Shims:  map[string]string{b.ours.Runtime: b.ours.Binary, b.upstream.Runtime: b.upstream.Binary},
		Dir:    b.cfg.TmpDir,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon for %s: %w", phase, err)
	}
	return &fleet{b: b, d: d, ns: b.prefix + "-" + phase}, nil
}

// spec is one container of a phase: its id, its shim, and what the phase
// uses it for (free-form; "" when all are alike).
type spec struct {
	ID   string
	Shim shimKind
	Kind string
}

// run starts the containers of specs (b.cfg.Workers at a time; untimed)
// and returns them in the order of specs. Every container started is
// kept for close, also when another one failed.
func (f *fleet) run(ctx context.Context, specs []spec) ([]*harness.Container, error) {
	out := make([]*harness.Container, len(specs))
	errs := make([]error, len(specs))
	next := make(chan int)
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
	)
	for w := 0; w < f.b.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if out[i], errs[i] = f.runOne(ctx, specs[i]); errs[i] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	for i := range specs {
		if ctx.Err() != nil || failed.Load() {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return nil, err
	}
	return out, nil
}

func (f *fleet) runOne(ctx context.Context, s spec) (*harness.Container, error) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := f.d.Run(rctx, harness.ContainerConfig{
		Namespace: f.ns,
		ID:        s.ID,
		Runtime:   s.Shim.Runtime,
		Busybox:   f.b.cfg.Busybox,
	})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.cs = append(f.cs, c)
	f.mu.Unlock()
	return c, nil
}

// killShims kills the shim of every container (containerd must be down,
// or it would clean up at once).
func killShims(cs []*harness.Container) error {
	var errs []error
	for _, c := range cs {
		if err := c.KillShim(); err != nil {
			errs = append(errs, fmt.Errorf("kill shim of %s: %w", c.Cfg.ID, err))
		}
	}
	return errors.Join(errs...)
}

// close removes every container of the fleet (harness Cleanup, a few at a
// time), stops the daemon and removes its directory, the namespace's
// parent cgroups and its runc root. It returns every error it met.
func (f *fleet) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f.mu.Lock()
	cs := f.cs
	f.mu.Unlock()
	errs := make([]error, len(cs))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.Cleanup(ctx); err != nil {
				errs[i] = fmt.Errorf("clean up %s: %w", c.Cfg.ID, err)
			}
		}()
	}
	wg.Wait()
	errs = append(errs, f.d.Close())
	if err := os.Remove(filepath.Join(harness.DefaultRuncRoot, f.ns)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs, harness.RemoveNamespaceCgroups(f.ns))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up namespace %s: %w", f.ns, err)
	}
	return nil
}

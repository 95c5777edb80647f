package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
)

// result is everything one run measured; it is the JSON result file.
type result struct {
	Date    string    `json:"date"`
	Machine machine   `json:"machine"`
	Build   buildInfo `json:"build"`
	Config  config    `json:"config"`
	// DelegateEnv is $CONTAINERD_SHIM_ROBUST_DELEGATE as this program found
	// it; the program unsets it, so that our shim finds each line's upstream
	// shim next to itself in the daemon's bin directory.
	DelegateEnv string `json:"delegate_env_unset,omitempty"`
	// Reaper is what reaped the run's orphans (see superviseInPidNS).
	Reaper string       `json:"reaper"`
	Start  *startResult `json:"start,omitempty"`
	Lines  []lineResult `json:"lines"`
	// GC is the sweep of many orphans (ops' BenchmarkGCScale); nil when -gc 0
	// or when it failed before any figure.
	GC        *gcResult `json:"gc,omitempty"`
	Targets   []target  `json:"targets"`
	Errors    []string  `json:"errors,omitempty"`
	DurationS float64   `json:"duration_s"`
}

// lineResult is every phase on one containerd line.
type lineResult struct {
	Line line `json:"line"`
	// Version is the daemon's own version, as it answered.
	Version string          `json:"daemon_version"`
	Delete  *deleteResult   `json:"delete,omitempty"`
	Restart []restartResult `json:"restart,omitempty"`
	Running *runningResult  `json:"running,omitempty"`
}

// run is the program: under the reaper, parse the flags, check the
// machine, run the phases, print the figures and write the result file.
// Its exit status is 0 when every phase ran and cleaned up, whatever the
// figures; 1 when a phase failed; 2 when it could not start.
func run(args []string) int {
	if deleteOneRequested() {
		return deleteOne()
	}
	if inPidNS() {
		return pidNSInit(args)
	}
	if !underReaper() {
		return superviseInPidNS(args)
	}
	cfg, err := parseConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.check()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	// Every daemon passes its environment to its shims: ours must find its
	// delegate next to itself, as installed, not where a caller pointed.
	delegateEnv := os.Getenv(delegate.EnvDelegate)
	os.Unsetenv(delegate.EnvDelegate)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	res := runPhases(ctx, cfg)
	res.DelegateEnv, res.Reaper = delegateEnv, reaperKind()
	res.Targets = evaluate(res)
	printResult(os.Stdout, res)
	if err := writeJSON(cfg.Out, res); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	fmt.Printf("\nresult file: %s\n", cfg.Out)
	if len(res.Errors) > 0 {
		return 1
	}
	return 0
}

// runPhases runs the binary-start phase, then every phase on each line in
// turn; a phase that fails is recorded and the next one still runs, unless
// the run was interrupted.
func runPhases(ctx context.Context, cfg config) result {
	start := time.Now()
	m := describeMachine()
	res := result{
		Date:   start.UTC().Format(time.RFC3339),
		Config: cfg,
		Build:  describeBuild(cfg),
	}
	progress("bench: %s; %d lines; cgroups %s; load %s", cfg.sizes(), len(cfg.Lines), m.Cgroups, m.LoadBefore)
	fail := func(phase string, err error) {
		res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", phase, err))
		progress("%s FAILED: %v", phase, err)
	}

	m.markLoad("start")
	s, err := startPhase(ctx, cfg)
	if err != nil {
		fail("start", err)
	} else {
		res.Start = &s
	}
	for _, l := range cfg.Lines {
		if ctx.Err() != nil {
			break
		}
		lr := runLine(ctx, newBench(cfg, l), &m, fail)
		res.Lines = append(res.Lines, lr)
	}
	if cfg.GCOrphans > 0 && ctx.Err() == nil {
		m.markLoad("gc")
		g, err := gcPhase(ctx, cfg, cfg.GCOrphans)
		if err != nil {
			fail("gc", err)
		}
		if len(g.Runs) > 0 || len(g.Log) > 0 {
			res.GC = &g
		}
	}
	if err := ctx.Err(); err != nil {
		fail("run", fmt.Errorf("interrupted: %w", err))
	}
	m.LoadAfter = loadavg()
	res.Machine = m
	res.DurationS = time.Since(start).Seconds()
	return res
}

// runLine runs the delete, restart and running phases on b's line.
func runLine(ctx context.Context, b *bench, m *machine, fail func(string, error)) lineResult {
	lr := lineResult{Line: b.line}
	name := "containerd " + b.line.Name + " "
	// A phase that failed only in its cleanup still has its figures.
	m.markLoad(name + "delete")
	d, version, err := b.deletePhase(ctx)
	lr.Version = version
	if err != nil {
		fail(name+"delete", err)
	}
	if d.Ours.LatencyMS.N > 0 && d.Upstream.LatencyMS.N > 0 {
		lr.Delete = &d
	}
	for i, n := range b.cfg.RestartN {
		if ctx.Err() != nil {
			return lr
		}
		m.markLoad(fmt.Sprintf("%srestart N=%d", name, n))
		r, err := b.restartPhase(ctx, n, i)
		if err != nil {
			fail(fmt.Sprintf("%srestart N=%d", name, n), err)
		}
		if r.Ratio > 0 {
			lr.Restart = append(lr.Restart, r)
		}
	}
	if ctx.Err() != nil {
		return lr
	}
	m.markLoad(name + "running")
	r, err := b.runningPhase(ctx)
	if err != nil {
		fail(name+"running", err)
	}
	if r.StartRatio > 0 && r.RSSRatio > 0 {
		lr.Running = &r
	}
	return lr
}

// progress prints a line of progress to stderr, stamped.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// joinCleanup adds the errors of a phase's cleanup to the phase's error.
func joinCleanup(err error, cleanup ...error) error {
	if c := errors.Join(cleanup...); c != nil {
		return errors.Join(err, fmt.Errorf("cleanup: %w", c))
	}
	return err
}

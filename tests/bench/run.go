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
)

// result is everything one run measured; it is the JSON result file.
type result struct {
	Date      string          `json:"date"`
	Machine   machine         `json:"machine"`
	Build     buildInfo       `json:"build"`
	Config    config          `json:"config"`
	Delete    *deleteResult   `json:"delete,omitempty"`
	Restart   []restartResult `json:"restart,omitempty"`
	Running   *runningResult  `json:"running,omitempty"`
	Targets   []target        `json:"targets"`
	Errors    []string        `json:"errors,omitempty"`
	DurationS float64         `json:"duration_s"`
}

// run is the program: under the reaper, parse the flags, check the
// machine, run the three phases, print the figures and write the result
// file. Its exit status is 0 when every phase ran and cleaned up, whatever
// the figures; 1 when a phase failed; 2 when it could not start.
func run(args []string) int {
	if deleteOneRequested() {
		return deleteOne()
	}
	if !underReaper() {
		return superviseReaped(args)
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	b := newBench(cfg)
	res := b.runPhases(ctx)
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

// runPhases runs every phase in turn; a phase that fails is recorded and
// the next one still runs, unless the run was interrupted.
func (b *bench) runPhases(ctx context.Context) result {
	start := time.Now()
	b.machine = describeMachine()
	res := result{
		Date:   start.UTC().Format(time.RFC3339),
		Config: b.cfg,
		Build:  describeBuild(b.cfg.Root, b.cfg.Ours, b.cfg.Upstream),
	}
	progress("bench: %s; %s", b.cfg.sizes(), b.machine.Cgroups)
	fail := func(phase string, err error) {
		res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", phase, err))
		progress("%s FAILED: %v", phase, err)
	}

	// A phase that failed only in its cleanup still has its figures.
	d, err := b.deletePhase(ctx)
	if err != nil {
		fail("delete", err)
	}
	if d.Ours.LatencyMS.N > 0 && d.Upstream.LatencyMS.N > 0 {
		res.Delete = &d
	}
	for i, n := range b.cfg.RestartN {
		if ctx.Err() != nil {
			break
		}
		r, err := b.restartPhase(ctx, n, i)
		if err != nil {
			fail(fmt.Sprintf("restart N=%d", n), err)
		}
		if r.Ratio > 0 {
			res.Restart = append(res.Restart, r)
		}
	}
	if ctx.Err() == nil {
		r, err := b.runningPhase(ctx)
		if err != nil {
			fail("running", err)
		}
		if r.StartRatio > 0 && r.RSSRatio > 0 {
			res.Running = &r
		}
	}
	if err := ctx.Err(); err != nil {
		fail("run", fmt.Errorf("interrupted: %w", err))
	}
	b.machine.LoadAfter = loadavg()
	res.Machine = b.machine
	res.DurationS = time.Since(start).Seconds()
	return res
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

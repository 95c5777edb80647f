package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// deleteOneEnv makes the program run our delete path once, in a fresh
// process, on the task it names ("namespace/id"; the task directory is the
// working directory, as for the delete command), and print the report's
// step durations as JSON: the per-step profile of a cold delete,
// as in the shim binary, where every code path runs for the first time.
const deleteOneEnv = "SHIM_BENCH_DELETE_ONE"

// stepTimes is one delete's report: total and steps, in ms, in order.
type stepTimes struct {
	TotalMS float64   `json:"total_ms"`
	Steps   []string  `json:"steps"`
	StepsMS []float64 `json:"steps_ms"`
	Err     string    `json:"error,omitempty"`
}

// stepProfile is our delete path run on dead tasks, in-process (warm: the
// code has run before) or in a fresh process each (cold): the median of
// each step and of the whole, without the binary's start.
type stepProfile struct {
	Tasks   int                `json:"tasks"`
	TotalMS summary            `json:"total_ms"`
	StepsMS map[string]summary `json:"step_ms"`
	Order   []string           `json:"step_order"`
}

// deleteOneRequested reports whether this process is a cold delete.
func deleteOneRequested() bool { return os.Getenv(deleteOneEnv) != "" }

// deleteOne is the cold delete: deletion.Delete on the task named by
// deleteOneEnv, its step times as JSON on stdout.
func deleteOne() int {
	ns, id, _ := strings.Cut(os.Getenv(deleteOneEnv), "/")
	rep, err := deletion.Delete(context.Background(), deletion.Request{Namespace: ns, ID: id, LiveShim: deletion.LeaveLiveShim, ByContainerd: true})
	st := timesOf(rep)
	if err != nil {
		st.Err = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(st); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func timesOf(rep *deletion.Report) stepTimes {
	var st stepTimes
	if rep == nil {
		return st
	}
	st.TotalMS = ms(rep.Duration)
	for _, s := range rep.Steps {
		st.Steps = append(st.Steps, s.Step)
		st.StepsMS = append(st.StepsMS, ms(s.Duration))
	}
	return st
}

// profiler runs the profile deletes of ours, one task at a time, and
// keeps their samples.
type profiler struct {
	self string // this program, for cold deletes
	runc string

	warm, cold []stepTimes
	runcMS     []float64
}

func newProfiler() (*profiler, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("own executable: %w", err)
	}
	runc, err := harness.FindTool("runc")
	if err != nil {
		return nil, fmt.Errorf("runc: %w", err)
	}
	return &profiler{self: self, runc: runc}, nil
}

// deleteWarm runs our delete path in this process on the dead task c.
func (p *profiler) deleteWarm(ctx context.Context, c *harness.Container) {
	rep, err := deletion.Delete(ctx, deletion.Request{Namespace: c.Cfg.Namespace, ID: c.Cfg.ID, Bundle: c.Bundle, LiveShim: deletion.LeaveLiveShim})
	if err != nil {
		progress("  in-process delete of %s: %v", c.Cfg.ID, err)
	}
	p.warm = append(p.warm, timesOf(rep))
}

// deleteGOGC is the GC percent our binary sets for its delete command
// (cli's deleteGCPercent); a cold delete runs with it, as the binary's does.
const deleteGOGC = "GOGC=400"

// deleteCold runs our delete path once in a fresh process of this program
// on the dead task c, with the delete command's environment and working
// directory, and the delete command's GC percent.
func (p *profiler) deleteCold(ctx context.Context, c *harness.Container) error {
	cmd := c.DeleteCommand(ctx) // for its environment and directory
	cold := exec.CommandContext(ctx, p.self)
	cold.Dir = cmd.Dir
	cold.Env = append(cmd.Env, deleteGOGC, deleteOneEnv+"="+c.Cfg.Namespace+"/"+c.Cfg.ID)
	var out, errb bytes.Buffer
	cold.Stdout, cold.Stderr = &out, &errb
	if err := cold.Run(); err != nil {
		return fmt.Errorf("cold delete of %s: %w: %s", c.Cfg.ID, err, errb.String())
	}
	var st stepTimes
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		return fmt.Errorf("cold delete of %s: %w", c.Cfg.ID, err)
	}
	if st.Err != "" {
		progress("  cold delete of %s: %s", c.Cfg.ID, st.Err)
	}
	p.cold = append(p.cold, st)
	return nil
}

// deleteRunc stops the dead task c (untimed) and then times the runtime's
// `delete --force` with the arguments our kill step gives it.
func (p *profiler) deleteRunc(ctx context.Context, c *harness.Container) error {
	if err := stopContainer(ctx, c); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p.runc, "--root", filepath.Dir(c.RuncState),
		"--log", filepath.Join(c.Bundle, "log.json"), "--log-format", "json",
		"delete", "--force", c.Cfg.ID)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("runc delete --force %s: %w: %s", c.Cfg.ID, err, out)
	}
	p.runcMS = append(p.runcMS, ms(time.Since(t)))
	return nil
}

// stopContainer kills the container's recorded processes through the
// harness (pidfd, start time verified) and waits until they are gone.
func stopContainer(ctx context.Context, c *harness.Container) error {
	for _, p := range c.Procs {
		if err := p.Kill(); err != nil {
			return fmt.Errorf("stop %s: %w", c.Cfg.ID, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if left := harness.WaitGone(wctx, c.Procs); len(left) > 0 {
		return fmt.Errorf("stop %s: still alive: %v", c.Cfg.ID, left)
	}
	return nil
}

func summarizeSteps(all []stepTimes) stepProfile {
	p := stepProfile{Tasks: len(all), StepsMS: map[string]summary{}}
	steps := map[string][]float64{}
	var totals []float64
	for _, st := range all {
		if len(st.Steps) == 0 {
			continue
		}
		totals = append(totals, st.TotalMS)
		for i, name := range st.Steps {
			if _, seen := steps[name]; !seen {
				p.Order = append(p.Order, name)
			}
			steps[name] = append(steps[name], st.StepsMS[i])
		}
	}
	p.TotalMS = summarize(totals)
	for name, xs := range steps {
		p.StepsMS[name] = summarize(xs)
	}
	return p
}

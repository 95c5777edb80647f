package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// minimalSource is the minimal Go program built in every run: its start is
// the machine's process-start floor for a static Go binary (exec, the Go
// runtime's start-up, fmt's package inits, one write, exit).
const minimalSource = `package main

import "fmt"

func main() { fmt.Println("hello, world") }
`

// startResult is the binary-start phase: the cost of starting each binary
// at all, on the machine as it is, with no daemon running.
type startResult struct {
	Runs int `json:"runs"`
	// MinimalMS is the minimal static Go binary (minimalSource,
	// CGO_ENABLED=0, built in the same run): the process-start floor.
	MinimalMS    summary `json:"minimal_ms"`
	MinimalBytes int64   `json:"minimal_bytes"`
	// OursHelpMS is `ours -h`: exec, the Go runtime, every package init of
	// our binary, the usage text; no delegate, nothing else. It is the
	// figure compared with the minimal binary (Ratio).
	OursHelpMS summary `json:"ours_help_ms"`
	// OursGCMS is `ours gc --dry-run` on an empty state directory (and an
	// empty runc root, a config file of two lines): the cheapest path of
	// ours that does some of its own work (flags, config, a sweep of
	// nothing, the cgroup hierarchies read for residue).
	OursGCMS summary `json:"ours_gc_empty_dry_run_ms"`
	// RuncMS is `runc --version`, which every delete of either shim starts.
	RuncMS summary `json:"runc_version_ms"`
	// Lines is, for each containerd line, the start of its upstream shim.
	Lines []lineStart `json:"lines"`
	// Ratio is OursHelpMS/MinimalMS; GCRatio OursGCMS/MinimalMS.
	Ratio   float64 `json:"ratio_ours_help_to_minimal"`
	GCRatio float64 `json:"ratio_ours_gc_to_minimal"`
}

// lineStart is the start of one line's upstream shim, and what our
// delegation adds to a command it hands over.
type lineStart struct {
	Line string `json:"line"`
	// UpstreamMS is `upstream -v`.
	UpstreamMS summary `json:"upstream_v_ms"`
	// UpstreamInfoMS is `upstream -info` (2.x: the runtime's features,
	// which runs `runc features`; 1.x does not know the flag and exits 2
	// after its usage), DelegatedInfoMS `ours -info` with upstream as
	// $CONTAINERD_SHIM_ROBUST_DELEGATE: our binary's start and an execve
	// of upstream's. Their difference is what delegation adds to every
	// command handed over, `start` included.
	UpstreamInfoMS  summary `json:"upstream_info_ms"`
	DelegatedInfoMS summary `json:"ours_info_delegated_ms"`
	InfoExit        int     `json:"info_exit_status"`
}

// startCmd is one timed command of the phase.
type startCmd struct {
	key  string
	args []string
	env  []string
	// anyExit accepts any exit status that is the same at every run;
	// otherwise the command must exit 0.
	anyExit bool
	exit    int
	ran     bool
	samples []float64
}

// startPhase builds the minimal binary and times every command StartRuns
// times, one after another in a rotating order (so that no command always
// follows the same one).
func startPhase(ctx context.Context, cfg config) (res startResult, err error) {
	dir, err := os.MkdirTemp(cfg.TmpDir, "bench-start-")
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = joinCleanup(err, rerr)
		}
	}()
	minimal, err := buildMinimal(ctx, dir)
	if err != nil {
		return res, err
	}
	if fi, err := os.Stat(minimal); err == nil {
		res.MinimalBytes = fi.Size()
	}
	empty := filepath.Join(dir, "empty-state")
	emptyRunc := filepath.Join(dir, "empty-runc")
	conf := filepath.Join(dir, "config.toml")
	for _, d := range []string{empty, emptyRunc} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return res, err
		}
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("version = 2\nstate = %q\n", dir)), 0o600); err != nil {
		return res, err
	}
	runc, err := harness.FindTool("runc")
	if err != nil {
		return res, fmt.Errorf("runc: %w", err)
	}
	base := cleanEnv()
	cmds := []*startCmd{
		{key: "minimal", args: []string{minimal}, env: base},
		{key: "ours -h", args: []string{cfg.Ours, "-h"}, env: base},
		{key: "ours gc", args: []string{cfg.Ours, "gc", "--config", conf, "--state-dir", empty, "--runc-root", emptyRunc, "--dry-run"}, env: base},
		{key: "runc", args: []string{runc, "--version"}, env: base},
	}
	for _, l := range cfg.Lines {
		cmds = append(cmds,
			&startCmd{key: l.Name + " upstream -v", args: []string{l.Upstream, "-v"}, env: base},
			&startCmd{key: l.Name + " upstream -info", args: []string{l.Upstream, "-info"}, env: base, anyExit: true},
			&startCmd{key: l.Name + " ours -info", args: []string{cfg.Ours, "-info"},
				env: append(append([]string(nil), base...), delegate.EnvDelegate+"="+l.Upstream), anyExit: true})
	}
	progress("start: %d commands, %d runs each (minimal Go binary built: %s)", len(cmds), cfg.StartRuns, minimal)
	for i := 0; i < cfg.StartRuns; i++ {
		for j := range cmds {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if err := cmds[(i+j)%len(cmds)].run(ctx, empty); err != nil {
				return res, err
			}
		}
	}
	by := map[string]*startCmd{}
	for _, c := range cmds {
		by[c.key] = c
	}
	res.Runs = cfg.StartRuns
	res.MinimalMS = summarize(by["minimal"].samples)
	res.OursHelpMS = summarize(by["ours -h"].samples)
	res.OursGCMS = summarize(by["ours gc"].samples)
	res.RuncMS = summarize(by["runc"].samples)
	res.Ratio = ratio(res.OursHelpMS.Median, res.MinimalMS.Median)
	res.GCRatio = ratio(res.OursGCMS.Median, res.MinimalMS.Median)
	for _, l := range cfg.Lines {
		up, ours := by[l.Name+" upstream -info"], by[l.Name+" ours -info"]
		if up.exit != ours.exit {
			return res, fmt.Errorf("%s: upstream -info exits %d, ours -info (delegated) %d", l.Name, up.exit, ours.exit)
		}
		res.Lines = append(res.Lines, lineStart{
			Line:            l.Name,
			UpstreamMS:      summarize(by[l.Name+" upstream -v"].samples),
			UpstreamInfoMS:  summarize(up.samples),
			DelegatedInfoMS: summarize(ours.samples),
			InfoExit:        up.exit,
		})
	}
	return res, nil
}

// run runs the command once in dir (output discarded, stdin empty) and
// records its duration.
func (c *startCmd) run(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, c.args[0], c.args[1:]...)
	cmd.Env, cmd.Dir = c.env, dir
	t := time.Now()
	err := cmd.Run()
	d := time.Since(t)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.Exited():
		code = ee.ExitCode()
	case err != nil:
		return fmt.Errorf("%s: %w", strings.Join(c.args, " "), err)
	}
	switch {
	case !c.anyExit && code != 0:
		return fmt.Errorf("%s: exit status %d", strings.Join(c.args, " "), code)
	case c.ran && code != c.exit:
		return fmt.Errorf("%s: exit status %d, before %d", strings.Join(c.args, " "), code, c.exit)
	}
	c.ran, c.exit = true, code
	c.samples = append(c.samples, ms(d))
	return nil
}

// cleanEnv is this process's environment without what would steer our
// binary (its delegate, its metrics and state directories).
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		name, _, _ := strings.Cut(e, "=")
		switch name {
		case delegate.EnvDelegate, ops.EnvMetricsDir, cli.EnvStateDir:
			continue
		}
		env = append(env, e)
	}
	return env
}

// buildMinimal builds minimalSource in dir as containerd's Makefile builds
// its shims (static, no cgo, -trimpath) with the go command that runs this
// program, and returns the binary's path.
func buildMinimal(ctx context.Context, dir string) (string, error) {
	src := filepath.Join(dir, "minimal")
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module minimal\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(minimalSource), 0o644); err != nil {
		return "", err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "minimal-hello")
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the minimal Go binary: %w: %s", err, out)
	}
	if err := harness.StaticBinary(bin); err != nil {
		return "", fmt.Errorf("minimal Go binary: %w", err)
	}
	return bin, nil
}

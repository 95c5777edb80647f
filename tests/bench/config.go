package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// config is what one run measures and with which binaries.
type config struct {
	Quick bool `json:"quick"`
	// DeleteTasks is the number of dead tasks per shim deleted by hand.
	DeleteTasks int `json:"delete_tasks"`
	// ProfileTasks is the number of further dead tasks of ours for each
	// kind of profile (profileKinds: warm, cold, runc alone).
	ProfileTasks int `json:"profile_tasks"`
	// FloorRuns is the number of `-v` runs per binary (start-up floor).
	FloorRuns int `json:"floor_runs"`
	// RestartN lists the numbers of dead tasks containerd restarts with.
	RestartN []int `json:"restart_n"`
	// Starts is the number of timed container create+starts per shim; each
	// shim's container stays running for the RSS samples.
	Starts int `json:"starts"`
	// RSSSamples is the number of VmRSS samples per idle shim.
	RSSSamples int `json:"rss_samples"`
	// Workers is how many containers are set up at a time (untimed).
	Workers int `json:"setup_workers"`

	Containerd string `json:"containerd_binary"`
	Ours       string `json:"ours_binary"`
	Upstream   string `json:"upstream_binary"`
	Busybox    string `json:"busybox"`
	Out        string `json:"-"`
	TmpDir     string `json:"-"`
	Root       string `json:"-"` // the repository
}

// quickConfig is -quick: every phase, smaller.
var quickConfig = config{DeleteTasks: 5, ProfileTasks: 3, FloorRuns: 5, RestartN: []int{5, 10}, Starts: 3, RSSSamples: 3}

// parseConfig parses the flags; defaults are the sizes of issue 4.
func parseConfig(args []string) (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{Workers: 2, Root: root}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&c.Quick, "quick", false, "small run for development: "+quickConfig.sizes())
	fs.IntVar(&c.DeleteTasks, "tasks", 20, "dead tasks per shim deleted by hand")
	fs.IntVar(&c.ProfileTasks, "profile-tasks", 10, "further dead tasks of ours for each profile (warm in-process, cold fresh process, runc alone)")
	fs.IntVar(&c.FloorRuns, "floor-runs", 20, "`-v` runs per binary for the start-up floor")
	restart := fs.String("restart", "20,100", "comma-separated numbers of dead tasks for the restart phase")
	fs.IntVar(&c.Starts, "starts", 20, "timed container create+starts per shim (each shim then sampled for RSS)")
	fs.IntVar(&c.RSSSamples, "rss-samples", 5, "VmRSS samples per idle shim")
	fs.IntVar(&c.Workers, "setup-workers", 2, "containers set up at a time (untimed)")
	fs.StringVar(&c.Containerd, "containerd", "/usr/bin/containerd", "containerd binary")
	fs.StringVar(&c.Ours, "shim", filepath.Join(root, "bin/containerd-shim-runc-v2-robust"), "our shim")
	fs.StringVar(&c.Upstream, "upstream", filepath.Join(root, "bin/upstream/containerd-shim-runc-v2"), "upstream's shim")
	fs.StringVar(&c.Busybox, "busybox", "", "static busybox (default: busybox on PATH)")
	fs.StringVar(&c.Out, "out", filepath.Join(root, "tests/out/bench.json"), "JSON result file")
	fs.StringVar(&c.TmpDir, "tmp", "", "parent of the daemons' temp directories (default: $TMPDIR or /tmp)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.RestartN, err = parseInts(*restart); err != nil {
		return config{}, fmt.Errorf("-restart: %w", err)
	}
	if c.Quick {
		c.DeleteTasks, c.ProfileTasks, c.FloorRuns = quickConfig.DeleteTasks, quickConfig.ProfileTasks, quickConfig.FloorRuns
		c.RestartN, c.Starts, c.RSSSamples = quickConfig.RestartN, quickConfig.Starts, quickConfig.RSSSamples
	}
	if c.DeleteTasks < 1 || c.Starts < 1 || c.RSSSamples < 1 || c.Workers < 1 || c.FloorRuns < 1 || c.ProfileTasks < 0 {
		return config{}, errors.New("-tasks, -starts, -rss-samples, -setup-workers and -floor-runs must be at least 1")
	}
	return c, nil
}

// sizes describes the sizes of a config in one line.
func (c config) sizes() string {
	return fmt.Sprintf("%d deletes per shim, restart N=%s, %d starts per shim", c.DeleteTasks, joinInts(c.RestartN), c.Starts)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// repoRoot is the directory holding this module's go.mod, searched upwards
// from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/shimrobust/containerd-shim-runc-v2-robust\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no containerd-shim-runc-v2-robust go.mod above %s: run from the repository", dir)
		}
	}
}

// check verifies every prerequisite before anything is started.
func (c *config) check() error {
	if os.Geteuid() != 0 {
		return errors.New("the benchmark needs root (containerd, runc, cgroups, mounts)")
	}
	if err := harness.CheckBinaries(
		harness.Binary{What: "containerd", Path: c.Containerd, Hint: "install Debian's containerd, or pass -containerd"},
		harness.Binary{What: "our shim", Path: c.Ours, Hint: "run `make build`"},
		harness.Binary{What: "upstream's shim", Path: c.Upstream, Hint: "run `make upstream`"},
	); err != nil {
		return err
	}
	var err error
	if c.Busybox, err = harness.FindBusybox(c.Busybox, "install busybox-static, or pass -busybox", "install busybox-static"); err != nil {
		return err
	}
	return harness.CheckTools("install runc", "runc")
}

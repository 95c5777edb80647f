package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// line is one containerd line the run measures: its daemon and the
// upstream shim of the same line, which is both the baseline and our
// delegate (installed next to ours in the daemon's bin directory).
type line struct {
	// Name is the line, "1.6" or "2.4", from `containerd --version`.
	Name       string `json:"name"`
	Containerd string `json:"containerd_binary"`
	Upstream   string `json:"upstream_binary"`
	// Version is `containerd --version`'s version field.
	Version string `json:"version"`
}

// config is what one run measures and with which binaries.
type config struct {
	Quick bool `json:"quick"`
	// DeleteTasks is the number of dead tasks per shim deleted by hand.
	DeleteTasks int `json:"delete_tasks"`
	// ProfileTasks is the number of further dead tasks of ours for each
	// kind of profile (profileKinds: warm, cold, runc alone).
	ProfileTasks int `json:"profile_tasks"`
	// StartRuns is the number of runs of each command of the binary-start
	// phase.
	StartRuns int `json:"start_runs"`
	// RestartN lists the numbers of dead tasks containerd restarts with.
	RestartN []int `json:"restart_n"`
	// Starts is the number of timed container create+starts per shim; each
	// shim's container stays running for the RSS samples.
	Starts int `json:"starts"`
	// RSSSamples is the number of VmRSS samples per idle shim.
	RSSSamples int `json:"rss_samples"`
	// Workers is how many containers are set up at a time (untimed).
	Workers int `json:"setup_workers"`
	// GCOrphans is the number of orphans of the gc phase (ops'
	// BenchmarkGCScale); 0 skips it.
	GCOrphans int `json:"gc_orphans"`

	Lines   []line `json:"lines"`
	Ours    string `json:"ours_binary"`
	Busybox string `json:"busybox"`
	Out     string `json:"-"`
	TmpDir  string `json:"-"`
	Root    string `json:"-"` // the repository
}

// quickConfig is -quick: every phase on every line, smaller.
var quickConfig = config{DeleteTasks: 4, ProfileTasks: 2, StartRuns: 10, RestartN: []int{10}, Starts: 3, RSSSamples: 3, GCOrphans: 40}

// parseConfig parses the flags; the defaults are the sizes of issue 12.
func parseConfig(args []string) (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{Workers: 2, Root: root}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&c.Quick, "quick", false, "small run for development: "+quickConfig.sizes())
	fs.IntVar(&c.DeleteTasks, "tasks", 20, "dead tasks per shim deleted by hand, on each line")
	fs.IntVar(&c.ProfileTasks, "profile-tasks", 4, "further dead tasks of ours for each profile (warm in-process, cold fresh process, runc alone), on each line")
	fs.IntVar(&c.StartRuns, "start-runs", 30, "runs of each command for the binary start (minimal Go binary, ours -h, ...)")
	restart := fs.String("restart", "100", "comma-separated numbers of dead tasks for the restart phase, on each line")
	fs.IntVar(&c.Starts, "starts", 60, "timed container create+starts per shim, on each line (each shim then sampled for RSS)")
	fs.IntVar(&c.RSSSamples, "rss-samples", 5, "VmRSS samples per idle shim")
	fs.IntVar(&c.Workers, "setup-workers", 2, "containers set up at a time (untimed)")
	fs.IntVar(&c.GCOrphans, "gc", 1000, "orphans swept by the gc phase (go test ./ops -run BenchmarkGCScale -gcscale=N); 0 skips it")
	containerds := fs.String("containerd", "/usr/bin/containerd,"+filepath.Join(root, "bin/containerd-2.4/containerd"),
		"comma-separated containerd binaries, one per line measured; each line's upstream shim (baseline and our delegate) is the containerd-shim-runc-v2 next to it")
	upstreams := fs.String("upstream", "", "comma-separated upstream shims, one per -containerd (default: containerd-shim-runc-v2 next to each containerd)")
	fs.StringVar(&c.Ours, "shim", filepath.Join(root, "bin/containerd-shim-runc-v2-robust"), "our shim")
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
	if c.Lines, err = parseLines(*containerds, *upstreams); err != nil {
		return config{}, err
	}
	// Absolute: the daemons run in directories of their own.
	for _, p := range []*string{&c.Ours, &c.Busybox} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return config{}, err
			}
		}
	}
	if c.Quick {
		c.DeleteTasks, c.ProfileTasks, c.StartRuns = quickConfig.DeleteTasks, quickConfig.ProfileTasks, quickConfig.StartRuns
		c.RestartN, c.Starts, c.RSSSamples = quickConfig.RestartN, quickConfig.Starts, quickConfig.RSSSamples
		c.GCOrphans = min(c.GCOrphans, quickConfig.GCOrphans)
	}
	if c.DeleteTasks < 1 || c.Starts < 1 || c.RSSSamples < 1 || c.Workers < 1 || c.StartRuns < 1 || c.ProfileTasks < 0 || c.GCOrphans < 0 {
		return config{}, errors.New("-tasks, -starts, -rss-samples, -setup-workers and -start-runs must be at least 1, -profile-tasks and -gc at least 0")
	}
	return c, nil
}

// parseLines pairs every containerd with its upstream shim.
func parseLines(containerds, upstreams string) ([]line, error) {
	cs, us := splitList(containerds), splitList(upstreams)
	if len(cs) == 0 {
		return nil, errors.New("-containerd: no containerd binary")
	}
	if len(us) > 0 && len(us) != len(cs) {
		return nil, fmt.Errorf("-upstream names %d shims for %d containerd binaries", len(us), len(cs))
	}
	out := make([]line, len(cs))
	for i, c := range cs {
		c, err := filepath.Abs(c)
		if err != nil {
			return nil, err
		}
		out[i] = line{Containerd: c, Upstream: filepath.Join(filepath.Dir(c), delegate.BinaryName)}
		if len(us) > 0 {
			if out[i].Upstream, err = filepath.Abs(us[i]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// sizes describes the sizes of a config in one line.
func (c config) sizes() string {
	return fmt.Sprintf("%d deletes per shim, restart N=%s, %d create+starts per shim on each line; %d runs per start command; gc of %d orphans",
		c.DeleteTasks, joinInts(c.RestartN), c.Starts, c.StartRuns, c.GCOrphans)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
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

// check verifies every prerequisite before anything is started, and names
// each line from its containerd's version.
func (c *config) check() error {
	if os.Geteuid() != 0 {
		return errors.New("the benchmark needs root (containerd, runc, cgroups, mounts)")
	}
	if err := harness.CheckBinaries(harness.Binary{What: "our shim", Path: c.Ours, Hint: "run `make build`"}); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i := range c.Lines {
		l := &c.Lines[i]
		if err := harness.CheckBinaries(
			harness.Binary{What: "containerd", Path: l.Containerd, Hint: "install Debian's containerd (`make deps`), run `make daemons`, or pass -containerd"},
			harness.Binary{What: "upstream's shim of " + l.Containerd, Path: l.Upstream, Hint: "every containerd installs containerd-shim-runc-v2 next to itself; `make daemons` builds them, or pass -upstream"},
		); err != nil {
			return err
		}
		l.Version, l.Name = containerdVersion(l.Containerd)
		if l.Name == "" || seen[l.Name] {
			l.Name = fmt.Sprintf("line%d", i+1)
		}
		seen[l.Name] = true
	}
	var err error
	if c.Busybox, err = harness.FindBusybox(c.Busybox, "install busybox-static, or pass -busybox", "install busybox-static"); err != nil {
		return err
	}
	return harness.CheckTools("install runc", "runc")
}

// containerdVersion runs `containerd --version` and returns its version
// field ("1.6.20~ds1", "v2.4.2") and the line ("1.6", "2.4"; "" when
// it cannot be read).
func containerdVersion(bin string) (version, name string) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown", ""
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "unknown", ""
	}
	version = f[2]
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return version, ""
	}
	return version, parts[0] + "." + parts[1]
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// gcTimeout bounds the gc phase (1000 orphans take ~3 min on 2 cores).
const gcTimeout = 10 * time.Minute

// gcResult is the gc phase: ops' own scale benchmark, BenchmarkGCScale, run as
// its author runs it (go test ./ops -run ^$ -bench BenchmarkGCScale -benchtime 1x -gcscale=N -v): the
// built binary sweeps N orphans (one in four with a live container
// process) with `gc` at the default parallelism, with `gc --parallel 1`,
// and as one `delete` process per task one after another, each on orphans
// laid out afresh. The figures are parsed from its log; Log keeps the
// lines as it wrote them.
type gcResult struct {
	N       int      `json:"n"`
	Command string   `json:"command"`
	Runs    []gcRun  `json:"runs"`
	Passed  bool     `json:"passed"`
	Log     []string `json:"log"`
	// Ratio is the time of gc at the default parallelism over that of the
	// same deletes one by one; PeakRSSMiB is that gc's peak RSS.
	Ratio      float64 `json:"ratio_gc_to_one_by_one"`
	PeakRSSMiB float64 `json:"gc_peak_rss_mib"`
	DurationS  float64 `json:"duration_s"`
}

// gcRun is one of BenchmarkGCScale's runs.
type gcRun struct {
	Name       string  `json:"name"`
	ElapsedMS  float64 `json:"elapsed_ms"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	Processes  int     `json:"processes"`
	// RSSOf says whose peak RSS it is, as BenchmarkGCScale wrote it.
	RSSOf string `json:"peak_rss_of"`
}

// gcRunLine is one of BenchmarkGCScale's result lines:
// "<name>  <elapsed>  <x>x one by one  <y>x --parallel 1  peak RSS <m> MiB (<how>)",
// where how names the processes run ("1 process", "largest of 1 sampled
// of 1000 processes").
var (
	gcRunLine  = regexp.MustCompile(`^\s*\S+\.go:\d+:\s+(.+?)\s+([0-9.]+(?:µs|ms|s|m[0-9.]*s|h\S*))\s+[0-9.]+x one by one.*peak RSS\s+([0-9.]+) MiB \(([^)]*)\)`)
	lastNumber = regexp.MustCompile(`(\d+)\D*$`)
)

// gcPhase runs BenchmarkGCScale with n orphans.
func gcPhase(ctx context.Context, cfg config, n int) (res gcResult, err error) {
	res.N = n
	args := []string{"test", "-count=1", "-timeout", gcTimeout.String(), "-run", "^$", "-bench", "^BenchmarkGCScale$", "-benchtime", "1x", "./ops", "-gcscale=" + strconv.Itoa(n), "-v"}
	res.Command = "go " + strings.Join(args, " ")
	progress("gc: %s", res.Command)
	gobin, err := exec.LookPath("go")
	if err != nil {
		return res, fmt.Errorf("go command: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, gcTimeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, args...)
	cmd.Dir, cmd.Env = cfg.Root, append(cleanEnv(), "GOFLAGS=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t := time.Now()
	runErr := cmd.Run()
	res.DurationS = time.Since(t).Seconds()
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "gc_scale_test.go:") || strings.HasPrefix(strings.TrimSpace(l), "--- ") || strings.HasPrefix(l, "ok") || strings.HasPrefix(l, "FAIL") {
			res.Log = append(res.Log, strings.TrimRight(l, " "))
		}
		if m := gcRunLine.FindStringSubmatch(l); m != nil {
			d, derr := time.ParseDuration(m[2])
			rss, _ := strconv.ParseFloat(m[3], 64)
			procs := 0
			if n := lastNumber.FindStringSubmatch(m[4]); n != nil {
				procs, _ = strconv.Atoi(n[1])
			}
			if derr == nil {
				res.Runs = append(res.Runs, gcRun{Name: strings.TrimSpace(m[1]), ElapsedMS: ms(d), PeakRSSMiB: rss, Processes: procs, RSSOf: m[4]})
			}
		}
	}
	res.Passed = runErr == nil
	if runErr != nil {
		return res, fmt.Errorf("%s: %w\n%s", res.Command, runErr, tail(out.String(), 30))
	}
	if len(res.Runs) < 2 {
		return res, fmt.Errorf("%s: passed, but its figures could not be read (%d result lines); its log is in the result file", res.Command, len(res.Runs))
	}
	// gc at the default parallelism over the same deletes one by one: by
	// name, else the first run over the last (BenchmarkGCScale's order).
	gc, base := res.Runs[0], res.Runs[len(res.Runs)-1]
	for _, r := range res.Runs {
		switch {
		case strings.HasPrefix(r.Name, "gc --parallel default"):
			gc = r
		case strings.HasPrefix(r.Name, "one by one"):
			base = r
		}
	}
	res.Ratio, res.PeakRSSMiB = ratio(gc.ElapsedMS, base.ElapsedMS), gc.PeakRSSMiB
	return res, nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

package main

import (
	"regexp"
	"strings"
	"time"
)

// restartLog is what containerd's log of one restart says about where the
// cleanup time went. containerd runs the dead shims' deletes one after
// another during its start-up, logging "cleaning up dead shim" before each.
type restartLog struct {
	// FirstCleanupMS is the time from the daemon's start (the harness's
	// "=== start" stamp) to containerd's first "cleaning up dead shim":
	// containerd's own start-up before any task.
	FirstCleanupMS float64 `json:"first_cleanup_ms"`
	// PerTaskMS summarises the intervals between consecutive "cleaning up
	// dead shim" lines: on 1.x, which cleans up one task after another, the
	// whole cost of one dead task inside containerd (dial the dead socket,
	// run the delete command, remove the bundle, publish the exit); 2.x
	// cleans up GOMAXPROCS tasks at a time (core/runtime/v2/shim_load.go),
	// so there it is that cost divided by about GOMAXPROCS.
	PerTaskMS summary `json:"per_task_ms"`
	// ReportedDeleteMS summarises the durations our delete reports on its
	// stderr ("deleted in ..."), which containerd logs as cleanup warnings:
	// the delete path alone, without starting the binary. Empty for
	// upstream's shim.
	ReportedDeleteMS summary `json:"reported_delete_ms"`
	// SlowSteps counts, by step, the steps our delete's report names as
	// slow (100 ms or more: deletion.Report.Text names them), with their
	// durations: where a slow delete spent its time. Empty for upstream's.
	SlowSteps map[string]summary `json:"slow_steps_ms,omitempty"`
	// Tasks is the number of "cleaning up dead shim" lines.
	Tasks int `json:"tasks"`
	// PerTaskSamplesMS and ReportedSamplesMS are the samples, in the order
	// containerd cleaned up.
	PerTaskSamplesMS  []float64 `json:"per_task_samples_ms"`
	ReportedSamplesMS []float64 `json:"reported_delete_samples_ms,omitempty"`
}

var (
	logTime     = regexp.MustCompile(`^time="([^"]+)"`)
	reportedDur = regexp.MustCompile(`robust delete \S+: (?:NOT fully )?deleted in ([0-9.]+[µmn]?s)`)
	// slowStep is a step line of our report, newline-escaped in the log.
	slowStep = regexp.MustCompile(`\\n  ([a-z]+) [a-z ]+? in ([0-9.]+[µmn]?s)`)
)

// parseRestartLog reads the log of one daemon start (from its "=== start"
// line on).
func parseRestartLog(log string) restartLog {
	var (
		out      restartLog
		start    time.Time
		cleanups []time.Time
		reported []float64
		slow     = map[string][]float64{}
	)
	for _, line := range strings.Split(log, "\n") {
		if s, ok := strings.CutPrefix(line, "=== start "); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				start, cleanups, reported, slow = t, nil, nil, map[string][]float64{}
			}
			continue
		}
		if strings.Contains(line, `msg="cleaning up dead shim"`) {
			if m := logTime.FindStringSubmatch(line); m != nil {
				if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
					cleanups = append(cleanups, t)
				}
			}
		}
		if m := reportedDur.FindStringSubmatch(line); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				reported = append(reported, ms(d))
			}
			for _, m := range slowStep.FindAllStringSubmatch(line, -1) {
				if d, err := time.ParseDuration(m[2]); err == nil {
					slow[m[1]] = append(slow[m[1]], ms(d))
				}
			}
		}
	}
	for step, xs := range slow {
		if out.SlowSteps == nil {
			out.SlowSteps = map[string]summary{}
		}
		out.SlowSteps[step] = summarize(xs)
	}
	out.Tasks = len(cleanups)
	if len(cleanups) > 0 && !start.IsZero() {
		out.FirstCleanupMS = ms(cleanups[0].Sub(start))
	}
	var gaps []float64
	for i := 1; i < len(cleanups); i++ {
		gaps = append(gaps, ms(cleanups[i].Sub(cleanups[i-1])))
	}
	out.PerTaskMS, out.PerTaskSamplesMS = summarize(gaps), gaps
	out.ReportedDeleteMS, out.ReportedSamplesMS = summarize(reported), reported
	return out
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// Targets of issue 12 (ratios in one run); reported, never asserted.
const (
	targetDelete  = 0.10 // manual delete, ours/upstream of the same line
	targetRestart = 0.15 // restart cleanup with N=100 dead tasks
	targetStart   = 1.5  // binary start, ours/minimal static Go binary
	targetRunning = 1.05 // create+start latency and running-shim RSS
	targetGC      = 0.3  // gc of 1000 orphans, time / the same deletes one by one
	targetGCRSS   = 64   // gc's peak RSS, MiB
)

// target is one target of issue 12, evaluated on this run's figures. It is
// reported, never asserted.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"` // "×" (a ratio), "MiB" or "leftovers"
	Met   bool    `json:"met"`
}

func (t target) String() string {
	verdict := "MISSED"
	if t.Met {
		verdict = "met"
	}
	switch t.Unit {
	case "leftovers":
		return fmt.Sprintf("= 0 %s", verdict)
	case "MiB":
		return fmt.Sprintf("≤ %g MiB %s", t.Limit, verdict)
	}
	return fmt.Sprintf("≤ %.2f× %s", t.Limit, verdict)
}

func newTarget(name string, v, limit float64, unit string) target {
	return target{Name: name, Value: v, Limit: limit, Unit: unit, Met: v <= limit && (unit == "leftovers" || v > 0)}
}

// evaluate checks the targets of issue 12 against the figures present.
func evaluate(res result) []target {
	var ts []target
	if s := res.Start; s != nil {
		ts = append(ts, startTarget(s))
	}
	for _, l := range res.Lines {
		ts = append(ts, lineTargets(l)...)
	}
	if g := res.GC; g != nil && g.Ratio > 0 {
		ts = append(ts, gcTargets(g)...)
	}
	return ts
}

func gcTargets(g *gcResult) []target {
	return []target{
		newTarget(fmt.Sprintf("gc of %d orphans / one by one", g.N), g.Ratio, targetGC, "×"),
		newTarget(fmt.Sprintf("gc of %d orphans: peak RSS", g.N), g.PeakRSSMiB, targetGCRSS, "MiB"),
	}
}

func startTarget(s *startResult) target {
	return newTarget("binary start: ours -h / minimal Go binary", s.Ratio, targetStart, "×")
}

// lineTargets are the targets of one line, in the order printed.
func lineTargets(l lineResult) []target {
	var ts []target
	p := "containerd " + l.Line.Name + ": "
	if d := l.Delete; d != nil {
		ts = append(ts, newTarget(p+"manual delete ratio", d.Ratio, targetDelete, "×"))
	}
	for _, r := range l.Restart {
		ts = append(ts, newTarget(fmt.Sprintf("%srestart N=%d cleanup ratio", p, r.N), r.Ratio, targetRestart, "×"))
		ts = append(ts, newTarget(fmt.Sprintf("%srestart N=%d residue (ours)", p, r.N), float64(r.Ours.ResidueCount+r.Ours.BundlesLeft), 0, "leftovers"))
	}
	if r := l.Running; r != nil {
		ts = append(ts, newTarget(p+"create+start ratio", r.StartRatio, targetRunning, "×"))
		ts = append(ts, newTarget(p+"running shim RSS ratio", r.RSSRatio, targetRunning, "×"))
	}
	return ts
}

// printResult prints the machine and its process-start floor, the binary
// start, then each line's figures side by side with the ratio and the
// target, our delete's profile, and the targets.
func printResult(out io.Writer, res result) {
	printHeader(out, res)
	if s := res.Start; s != nil {
		printStart(out, s)
	}
	for _, l := range res.Lines {
		printLine(out, l)
	}
	if g := res.GC; g != nil {
		printGC(out, g)
	}
	printTargets(out, res.Targets)
	for _, e := range res.Errors {
		fmt.Fprintf(out, "ERROR %s\n", e)
	}
}

func printHeader(out io.Writer, res result) {
	m := res.Machine
	fmt.Fprintf(out, "\n== shim benchmark %s: %d CPUs, %s, kernel %s, %s, %s, cgroups %s, %s\n",
		res.Date, m.NProc, m.MemTotal, m.Kernel, m.OS, m.Runc, m.Cgroups, m.Go)
	fmt.Fprintf(out, "== load average %s → %s (highest 1-min at a phase start: %.2f); the machine is shared; orphans reaped by: %s\n", m.LoadBefore, m.LoadAfter, m.LoadMax, res.Reaper)
	dirty := ""
	if len(res.Build.Dirty) > 0 {
		dirty = fmt.Sprintf(" + uncommitted changes to %d product files", len(res.Build.Dirty))
	}
	ups := make([]string, len(res.Build.Upstream))
	for i, u := range res.Build.Upstream {
		ups[i] = fmt.Sprintf("%s %.1f MB %s", u.Line, float64(u.Bytes)/1e6, linking(u.Static))
	}
	fmt.Fprintf(out, "== commit %s%s; ours %.1f MB %s; upstream %s\n",
		res.Build.Commit, dirty, float64(res.Build.OursBytes)/1e6, linking(res.Build.OursStatic), strings.Join(ups, ", "))
	if s := res.Start; s != nil {
		fmt.Fprintf(out, "== process-start floor of this machine: %.2f ms (minimal static Go binary, hello world, CGO_ENABLED=0, built in this run; median of %d)\n",
			s.MinimalMS.Median, s.MinimalMS.N)
	}
}

func linking(static bool) string {
	if static {
		return "static"
	}
	return "dynamic"
}

func printStart(out io.Writer, s *startResult) {
	fmt.Fprintf(out, "\nbinary start, no daemon (%d runs each, rotating order), ms:\n", s.Runs)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  command\tmedian\tmin–max\t/ minimal\ttarget\t")
	row := func(name string, x summary, target string) {
		fmt.Fprintf(w, "  %s\t%.2f\t%.2f–%.2f\t%.3f\t%s\t\n", name, x.Median, x.Min, x.Max, ratio(x.Median, s.MinimalMS.Median), target)
	}
	row("minimal static Go binary (hello world)", s.MinimalMS, "")
	row("ours -h (the figure: runtime, package inits, usage)", s.OursHelpMS, startTarget(s).String())
	row("ours gc --dry-run, empty state dir", s.OursGCMS, "")
	row("runc --version", s.RuncMS, "")
	for _, l := range s.Lines {
		row(l.Line+" upstream -v", l.UpstreamMS, "")
		row(fmt.Sprintf("%s upstream -info (exit %d)", l.Line, l.InfoExit), l.UpstreamInfoMS, "")
		row(fmt.Sprintf("%s ours -info → execve upstream (%+.2f ms)", l.Line, l.DelegatedInfoMS.Median-l.UpstreamInfoMS.Median), l.DelegatedInfoMS, "")
	}
	w.Flush()
}

func printLine(out io.Writer, l lineResult) {
	fmt.Fprintf(out, "\n== containerd %s (%s, %s); upstream %s (baseline and our delegate)\n",
		l.Line.Name, l.Version, l.Line.Containerd, l.Line.Upstream)
	ts := map[string]target{}
	for _, t := range lineTargets(l) {
		ts[t.Name] = t
	}
	tgt := func(name string) string {
		if t, ok := ts["containerd "+l.Line.Name+": "+name]; ok {
			return t.String()
		}
		return ""
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tours\tupstream\tours/upstream\ttarget\t")
	if d := l.Delete; d != nil {
		printDelete(w, d, tgt("manual delete ratio"))
	}
	for _, r := range l.Restart {
		printRestart(w, r, tgt(fmt.Sprintf("restart N=%d cleanup ratio", r.N)), tgt(fmt.Sprintf("restart N=%d residue (ours)", r.N)))
	}
	if r := l.Running; r != nil {
		printRunning(w, r, tgt("running shim RSS ratio"), tgt("create+start ratio"))
	}
	w.Flush()
	if d := l.Delete; d != nil {
		fmt.Fprintln(out, "our delete path, median ms (min–max of the total) per step (package deletion's Report; no binary start):")
		printProfile(out, "warm, in-process", d.ProfileWarm)
		printProfile(out, "cold, fresh process, "+deleteGOGC, d.ProfileCold)
		if d.RepeatMS.N > 0 {
			fmt.Fprintf(out, "  ours run again on its deleted tasks (binary start + a delete with nothing to do): median %.1f ms\n", d.RepeatMS.Median)
		}
		if d.RuncStoppedMS.N > 0 {
			fmt.Fprintf(out, "  runc delete --force of a container already stopped: median %.1f ms\n", d.RuncStoppedMS.Median)
		}
	}
	for _, r := range l.Restart {
		if len(r.Ours.Log.SlowSteps) > 0 {
			fmt.Fprintf(out, "  restart N=%d: our delete's steps of 100 ms or more (containerd's log): %s\n", r.N, slowText(r.Ours.Log.SlowSteps))
		}
	}
}

func printDelete(w io.Writer, d *deleteResult, target string) {
	o, u := d.Ours.LatencyMS, d.Upstream.LatencyMS
	fmt.Fprintf(w, "manual delete, median ms (n=%d)\t%.1f\t%.1f\t%.3f\t%s\t\n", o.N, o.Median, u.Median, d.Ratio, target)
	fmt.Fprintf(w, "manual delete, min–max ms\t%.1f–%.1f\t%.1f–%.1f\t\t\t\n", o.Min, o.Max, u.Min, u.Max)
	fmt.Fprintf(w, "manual delete, failures\t%d\t%d\t\t\t\n", d.Ours.Failures, d.Upstream.Failures)
	fmt.Fprintf(w, "manual delete, residue (containerd down)\t%s\t%s\t\t\t\n", d.Ours.Residue, d.Upstream.Residue)
	if r := d.Ours.ReportedMS; r.N > 0 {
		fmt.Fprintf(w, "  of which our delete path as reported, median ms\t%.1f\t\t\t\t\n", r.Median)
	}
}

func printRestart(w io.Writer, r restartResult, target, residueTarget string) {
	o, u := r.Ours, r.Upstream
	fmt.Fprintf(w, "restart N=%d: start → all bundles gone, ms\t%.0f\t%.0f\t%.3f\t%s\t\n", r.N, o.CleanupMS, u.CleanupMS, r.Ratio, target)
	fmt.Fprintf(w, "restart N=%d: start → serving, ms\t%.0f\t%.0f\t%.3f\t\t\n", r.N, o.ServingMS, u.ServingMS, ratio(o.ServingMS, u.ServingMS))
	fmt.Fprintf(w, "restart N=%d: containerd start → first task, ms\t%.0f\t%.0f\t\t\t\n", r.N, o.Log.FirstCleanupMS, u.Log.FirstCleanupMS)
	fmt.Fprintf(w, "restart N=%d: interval between dead tasks in containerd's log, median ms\t%.1f\t%.1f\t%.3f\t\t\n", r.N,
		o.Log.PerTaskMS.Median, u.Log.PerTaskMS.Median, ratio(o.Log.PerTaskMS.Median, u.Log.PerTaskMS.Median))
	if d := o.Log.ReportedDeleteMS; d.N > 0 {
		fmt.Fprintf(w, "restart N=%d: our delete path as reported, median ms\t%.1f\t\t\t\t\n", r.N, d.Median)
	}
	fmt.Fprintf(w, "restart N=%d: residue\t%s\t%s\t\t%s\t\n", r.N, residueText(o), residueText(u), residueTarget)
}

// slowText is "shim ×67 (median 211 ms), kill ×11 (...)", most frequent
// first.
func slowText(m map[string]summary) string {
	steps := make([]string, 0, len(m))
	for s := range m {
		steps = append(steps, s)
	}
	sort.Slice(steps, func(i, j int) bool {
		if m[steps[i]].N != m[steps[j]].N {
			return m[steps[i]].N > m[steps[j]].N
		}
		return steps[i] < steps[j]
	})
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = fmt.Sprintf("%s ×%d (median %.0f ms)", s, m[s].N, m[s].Median)
	}
	return strings.Join(parts, ", ")
}

func printRunning(w io.Writer, r *runningResult, rssTarget, startTarget string) {
	o, u := r.Ours, r.Upstream
	fmt.Fprintf(w, "create+start, median ms (n=%d)\t%.1f\t%.1f\t%.3f\t%s\t\n", o.StartMS.N, o.StartMS.Median, u.StartMS.Median, r.StartRatio, startTarget)
	fmt.Fprintf(w, "create+start, min–max ms\t%.1f–%.1f\t%.1f–%.1f\t\t\t\n", o.StartMS.Min, o.StartMS.Max, u.StartMS.Min, u.StartMS.Max)
	fmt.Fprintf(w, "running shim VmRSS, median KiB (n=%d shims)\t%.0f\t%.0f\t%.3f\t%s\t\n", o.RSSKiB.N, o.RSSKiB.Median, u.RSSKiB.Median, r.RSSRatio, rssTarget)
	fmt.Fprintf(w, "running shim VmRSS, min–max KiB\t%.0f–%.0f\t%.0f–%.0f\t\t\t\n", o.RSSKiB.Min, o.RSSKiB.Max, u.RSSKiB.Min, u.RSSKiB.Max)
	fmt.Fprintf(w, "  of which RssAnon, median KiB\t%.0f\t%.0f\t%.3f\t\t\n", o.RSSAnonKiB.Median, u.RSSAnonKiB.Median, ratio(o.RSSAnonKiB.Median, u.RSSAnonKiB.Median))
	fmt.Fprintf(w, "  of which RssFile, median KiB\t%.0f\t%.0f\t%.3f\t\t\n", o.RSSFileKiB.Median, u.RSSFileKiB.Median, ratio(o.RSSFileKiB.Median, u.RSSFileKiB.Median))
	fmt.Fprintf(w, "running shim Pss (%d shims of each), median KiB\t%.0f\t%.0f\t%.3f\t\t\n", o.PSSKiB.N, o.PSSKiB.Median, u.PSSKiB.Median, ratio(o.PSSKiB.Median, u.PSSKiB.Median))
	fmt.Fprintf(w, "serving shim process's binary\t%s\t%s\t\t\t\n", servedText(o.ServedBy), servedText(u.ServedBy))
}

func servedText(m map[string]int) string {
	var parts []string
	for name, n := range m {
		parts = append(parts, fmt.Sprintf("%s ×%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func residueText(f restartFigures) string {
	if f.BundlesLeft > 0 {
		return fmt.Sprintf("%s (%d bundles never went)", f.Residue, f.BundlesLeft)
	}
	return f.Residue
}

func printProfile(out io.Writer, mode string, p stepProfile) {
	if p.Tasks == 0 {
		return
	}
	var parts []string
	for _, s := range p.Order {
		parts = append(parts, fmt.Sprintf("%s %.2f", s, p.StepsMS[s].Median))
	}
	fmt.Fprintf(out, "  %s (%d tasks): total %.2f (%.1f–%.1f) = %s\n",
		mode, p.Tasks, p.TotalMS.Median, p.TotalMS.Min, p.TotalMS.Max, strings.Join(parts, ", "))
}

func printTargets(out io.Writer, ts []target) {
	fmt.Fprintln(out, "\ntargets (issue 12; ratios of one run, reported, never asserted):")
	for _, t := range ts {
		switch t.Unit {
		case "×":
			fmt.Fprintf(out, "  %-52s %8.3f×  %s\n", t.Name, t.Value, t)
		case "MiB":
			fmt.Fprintf(out, "  %-52s %8.1f MiB  %s\n", t.Name, t.Value, t)
		default:
			fmt.Fprintf(out, "  %-52s %8.0f   %s\n", t.Name, t.Value, t)
		}
	}
}

func printGC(out io.Writer, g *gcResult) {
	fmt.Fprintf(out, "\n== gc of %d orphans (one in four with a live container process), ops' own benchmark: %s (%.0f s)\n", g.N, g.Command, g.DurationS)
	if len(g.Runs) > 0 {
		w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "  run\twall ms\t/ one by one\tpeak RSS MiB\tof\t")
		base := g.Runs[len(g.Runs)-1]
		for _, r := range g.Runs {
			if strings.HasPrefix(r.Name, "one by one") {
				base = r
			}
		}
		for _, r := range g.Runs {
			fmt.Fprintf(w, "  %s\t%.0f\t%.3f\t%.1f\t%s\t\n", r.Name, r.ElapsedMS, ratio(r.ElapsedMS, base.ElapsedMS), r.PeakRSSMiB, r.RSSOf)
		}
		w.Flush()
		return
	}
	for _, l := range g.Log {
		fmt.Fprintf(out, "  %s\n", l)
	}
}

// writeJSON writes res, indented, to path (its directory is created).
func writeJSON(path string, res result) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("result file: %w", err)
	}
	return nil
}

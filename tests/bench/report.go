package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// target is one target of issue 4, evaluated on this run's figures. It is
// reported, never asserted.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"` // "ms", "×" (a ratio ours/upstream) or "leftovers"
	Met   bool    `json:"met"`
}

// evaluate checks the targets of issue 4 against the figures present.
func evaluate(res result) []target {
	var ts []target
	le := func(name string, v, limit float64, unit string) {
		ts = append(ts, target{Name: name, Value: v, Limit: limit, Unit: unit, Met: v <= limit && (unit == "leftovers" || v > 0)})
	}
	if d := res.Delete; d != nil {
		le("manual delete median", d.Ours.LatencyMS.Median, 20, "ms")
		le("manual delete median ratio", d.Ratio, 0.2, "×")
	}
	for _, r := range res.Restart {
		le(fmt.Sprintf("restart cleanup N=%d ratio", r.N), r.Ratio, 0.25, "×")
		le(fmt.Sprintf("restart residue N=%d (ours)", r.N), float64(r.Ours.ResidueCount+r.Ours.BundlesLeft), 0, "leftovers")
	}
	if r := res.Running; r != nil {
		le("running shim RSS ratio", r.RSSRatio, 1.05, "×")
		le("create+start latency ratio", r.StartRatio, 1.05, "×")
	}
	return ts
}

// printResult prints the figures, both shims side by side with the ratio,
// then the profile of our delete and the targets.
func printResult(out io.Writer, res result) {
	printHeader(out, res)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tours\tupstream\tours/upstream\t")
	if d := res.Delete; d != nil {
		printDelete(w, d)
	}
	for _, r := range res.Restart {
		printRestart(w, r)
	}
	if r := res.Running; r != nil {
		printRunning(w, r)
	}
	w.Flush()
	if d := res.Delete; d != nil {
		fmt.Fprintln(out, "\nour delete path, median ms (min–max of the total) per step (package shim's Report; no binary start, no shim framework):")
		printProfile(out, "warm, in-process", d.ProfileWarm)
		printProfile(out, "cold, fresh process, GOGC=40", d.ProfileCold)
		if d.RepeatMS.N > 0 {
			fmt.Fprintf(out, "  ours run again on its deleted tasks (binary + framework, nothing to do): median %.1f ms\n", d.RepeatMS.Median)
		}
	}
	printTargets(out, res.Targets)
	for _, e := range res.Errors {
		fmt.Fprintf(out, "ERROR %s\n", e)
	}
}

func printHeader(out io.Writer, res result) {
	m := res.Machine
	fmt.Fprintf(out, "\n== shim benchmark %s: %d CPUs, kernel %s, %s, containerd %s, %s, cgroups %s, load %s → %s\n",
		res.Date, m.NProc, m.Kernel, m.OS, m.Containerd, m.Runc, m.Cgroups, m.LoadBefore, m.LoadAfter)
	dirty := ""
	if len(res.Build.Dirty) > 0 {
		dirty = fmt.Sprintf(" + uncommitted changes to %d files", len(res.Build.Dirty))
	}
	fmt.Fprintf(out, "== commit %s%s; binaries: ours %.1f MB, upstream %.1f MB\n\n",
		res.Build.Commit, dirty, float64(res.Build.OursBytes)/1e6, float64(res.Build.UpstreamBytes)/1e6)
}

func printDelete(w io.Writer, d *deleteResult) {
	o, u := d.Ours.LatencyMS, d.Upstream.LatencyMS
	fmt.Fprintf(w, "delete by hand, median ms (n=%d)\t%.1f\t%.1f\t%.3f\t\n", o.N, o.Median, u.Median, d.Ratio)
	fmt.Fprintf(w, "delete by hand, min–max ms\t%.1f–%.1f\t%.1f–%.1f\t\t\n", o.Min, o.Max, u.Min, u.Max)
	fmt.Fprintf(w, "delete by hand, failures\t%d\t%d\t\t\n", d.Ours.Failures, d.Upstream.Failures)
	fmt.Fprintf(w, "delete by hand, residue (containerd down)\t%s\t%s\t\t\n", d.Ours.Residue, d.Upstream.Residue)
	if r := d.Ours.ReportedMS; r.N > 0 {
		fmt.Fprintf(w, "  of which the delete path as reported, median ms\t%.1f\t\t\t\n", r.Median)
	}
	fmt.Fprintf(w, "binary start floor (-v), median ms\t%.1f\t%.1f\t%.3f\t\n",
		d.Ours.FloorMS.Median, d.Upstream.FloorMS.Median, ratio(d.Ours.FloorMS.Median, d.Upstream.FloorMS.Median))
	fmt.Fprintf(w, "runc start floor (--version), median ms\t%.1f\t\t\t\n", d.RuncFloorMS.Median)
	fmt.Fprintf(w, "runc delete --force of a stopped container, median ms\t%.1f\t\t\t\n", d.RuncStoppedMS.Median)
}

func printRestart(w io.Writer, r restartResult) {
	o, u := r.Ours, r.Upstream
	fmt.Fprintf(w, "restart N=%d: start → all bundles gone, ms\t%.0f\t%.0f\t%.3f\t\n", r.N, o.CleanupMS, u.CleanupMS, r.Ratio)
	fmt.Fprintf(w, "restart N=%d: start → serving, ms\t%.0f\t%.0f\t%.3f\t\n", r.N, o.ServingMS, u.ServingMS, ratio(o.ServingMS, u.ServingMS))
	fmt.Fprintf(w, "restart N=%d: containerd start → first task, ms\t%.0f\t%.0f\t\t\n", r.N, o.Log.FirstCleanupMS, u.Log.FirstCleanupMS)
	fmt.Fprintf(w, "restart N=%d: per dead task in containerd, median ms\t%.1f\t%.1f\t%.3f\t\n", r.N,
		o.Log.PerTaskMS.Median, u.Log.PerTaskMS.Median, ratio(o.Log.PerTaskMS.Median, u.Log.PerTaskMS.Median))
	if d := o.Log.ReportedDeleteMS; d.N > 0 {
		fmt.Fprintf(w, "restart N=%d: our delete path as reported, median ms\t%.1f\t\t\t\n", r.N, d.Median)
	}
	fmt.Fprintf(w, "restart N=%d: residue\t%s\t%s\t\t\n", r.N, residueText(o), residueText(u))
}

func printRunning(w io.Writer, r *runningResult) {
	o, u := r.Ours, r.Upstream
	fmt.Fprintf(w, "running shim VmRSS, median KiB (n=%d shims)\t%.0f\t%.0f\t%.3f\t\n", o.RSSKiB.N, o.RSSKiB.Median, u.RSSKiB.Median, r.RSSRatio)
	fmt.Fprintf(w, "running shim VmRSS, min–max KiB\t%.0f–%.0f\t%.0f–%.0f\t\t\n", o.RSSKiB.Min, o.RSSKiB.Max, u.RSSKiB.Min, u.RSSKiB.Max)
	fmt.Fprintf(w, "  of which RssAnon, median KiB\t%.0f\t%.0f\t%.3f\t\n", o.RSSAnonKiB.Median, u.RSSAnonKiB.Median, ratio(o.RSSAnonKiB.Median, u.RSSAnonKiB.Median))
	fmt.Fprintf(w, "  of which RssFile, median KiB\t%.0f\t%.0f\t%.3f\t\n", o.RSSFileKiB.Median, u.RSSFileKiB.Median, ratio(o.RSSFileKiB.Median, u.RSSFileKiB.Median))
	fmt.Fprintf(w, "running shim Pss (%d shims of each), median KiB\t%.0f\t%.0f\t%.3f\t\n", o.PSSKiB.N, o.PSSKiB.Median, u.PSSKiB.Median, ratio(o.PSSKiB.Median, u.PSSKiB.Median))
	fmt.Fprintf(w, "create+start, median ms (n=%d)\t%.1f\t%.1f\t%.3f\t\n", o.StartMS.N, o.StartMS.Median, u.StartMS.Median, r.StartRatio)
	fmt.Fprintf(w, "create+start, min–max ms\t%.1f–%.1f\t%.1f–%.1f\t\t\n", o.StartMS.Min, o.StartMS.Max, u.StartMS.Min, u.StartMS.Max)
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
	fmt.Fprintln(out, "\ntargets (issue 4):")
	for _, t := range ts {
		verdict := "MISSED"
		if t.Met {
			verdict = "met"
		}
		switch t.Unit {
		case "ms":
			fmt.Fprintf(out, "  %-40s %8.1f ms  ≤ %g ms  %s\n", t.Name, t.Value, t.Limit, verdict)
		case "×":
			fmt.Fprintf(out, "  %-40s %8.3f×   ≤ %g×    %s\n", t.Name, t.Value, t.Limit, verdict)
		default:
			fmt.Fprintf(out, "  %-40s %8.0f     = 0       %s\n", t.Name, t.Value, verdict)
		}
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

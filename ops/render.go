package ops

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// JSON is the report as indented JSON, newline-terminated.
func (g *GCReport) JSON() []byte {
	data, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return []byte(fmt.Sprintf("{\"error\":%q}\n", err.Error()))
	}
	return append(data, '\n')
}

// Text is the report for a person: a summary line, one line per task
// directory (with the delete's short report under each delete), the
// residue and the problems.
func (g *GCReport) Text() string {
	var b strings.Builder
	mode := ""
	if g.DryRun {
		mode = " (dry run: nothing changed)"
	}
	fmt.Fprintf(&b, "gc %s%s: ", g.StateDir, mode)
	if g.DryRun {
		fmt.Fprintf(&b, "%d would be deleted", g.Summary[string(GCWouldDelete)])
	} else {
		fmt.Fprintf(&b, "%d deleted, %d failed", g.Summary[string(GCDeleted)], g.Summary[string(GCFailed)])
	}
	fmt.Fprintf(&b, "; %d live, %d younger than %s, %d skipped; %d residue; in %s\n",
		g.Summary[string(GCLive)], g.Summary[string(GCYoung)], time.Duration(g.OlderThanSeconds*float64(time.Second)),
		g.Summary[string(GCSkipped)], len(g.Residue), roundDuration(g.DurationSeconds))
	if g.StateDirNote != "" {
		fmt.Fprintf(&b, "  note: %s (from %s)\n", g.StateDirNote, g.StateDirFrom)
	}
	for _, t := range g.Tasks {
		label := string(t.Action)
		if t.Action == GCLeft {
			label = "left (" + string(t.Status) + ")"
		}
		fmt.Fprintf(&b, "  %-14s %s/%s (age %s): %s\n", label, t.Namespace, t.ID, t.Age.Round(time.Second), t.Why)
		if t.report != nil {
			for _, line := range strings.Split(strings.TrimRight(t.report.Text(), "\n"), "\n") {
				fmt.Fprintf(&b, "      %s\n", line)
			}
			if t.Delete != nil && t.Delete.Error != "" {
				fmt.Fprintf(&b, "      error: %s\n", t.Delete.Error)
			}
		}
	}
	if len(g.Residue) > 0 {
		b.WriteString("residue outside task directories (reported only, nothing deleted):\n")
		for _, r := range g.Residue {
			paths := strings.Join(r.Paths, " ")
			if len(r.Paths) > 2 {
				paths = fmt.Sprintf("%s and %d more", r.Paths[0], len(r.Paths)-1)
			}
			fmt.Fprintf(&b, "  %-15s %s/%s: %s (%s)\n", r.Kind, r.Namespace, r.ID, r.Detail, paths)
		}
	}
	for _, p := range g.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	return b.String()
}

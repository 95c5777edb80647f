package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
)

// Result is how a whole delete ended, as the by-hand and gc reports and the
// metrics name it.
type Result string

// Results of a delete, from best to worst.
const (
	// ResultDeleted: the task is gone and no step failed (a step may have
	// worked around missing or corrupt files: outcome "partial").
	ResultDeleted Result = "deleted"
	// ResultIncomplete: the task directory is gone but a step failed;
	// what is left (a cgroup, the work directory...) is named in Left.
	// The exit status is still 0, as for containerd.
	ResultIncomplete Result = "incomplete"
	// ResultLeft: deletion.ErrUnsafe. A mount or a container process could not be
	// made to go, and the task directory was left in place on purpose.
	ResultLeft Result = "left"
	// ResultError: the delete did not start: the request was invalid
	// (namespace or id), or the task directory could not be opened or
	// locked. Nothing was touched.
	ResultError Result = "error"
	// ResultRefused: the delete did not run because the task's shim is
	// alive (by hand without -force; in gc, a shim that came alive after gc
	// looked): deletion.ErrShimAlive, decided under the task directory's
	// lock. Nothing was touched.
	ResultRefused Result = "refused"
)

// Results lists every Result, in the order above.
var Results = []Result{ResultDeleted, ResultIncomplete, ResultLeft, ResultError, ResultRefused}

// ResultOf classifies what Delete returned. A nil report counts as
// ResultError.
func ResultOf(rep *deletion.Report, err error) Result {
	switch {
	case errors.Is(err, deletion.ErrShimAlive):
		return ResultRefused
	case errors.Is(err, deletion.ErrUnsafe):
		return ResultLeft
	case err != nil || rep == nil:
		return ResultError
	case rep.Failed():
		return ResultIncomplete
	}
	return ResultDeleted
}

// Triggers of a delete: who ran it.
const (
	// TriggerContainerd: containerd ran `delete` after a shim died (it
	// passes -address and sets TTRPC_ADDRESS).
	TriggerContainerd = "containerd"
	// TriggerManual: an operator ran `delete` by hand.
	TriggerManual = "manual"
	// TriggerGC: `gc` deleted an orphaned task.
	TriggerGC = "gc"
)

// Triggers lists every trigger.
var Triggers = []string{TriggerContainerd, TriggerManual, TriggerGC}

// DeleteRecord is the structured record of one delete, as `--format json`
// prints it: the task, how the delete ended, every step with its outcome
// and duration, and what was left and why.
type DeleteRecord struct {
	Namespace string `json:"namespace"`
	ID        string `json:"id"`
	// Bundle is the task directory resolved ("" when the request was
	// invalid).
	Bundle  string `json:"bundle"`
	Trigger string `json:"trigger"`
	Result  Result `json:"result"`
	// Error is why the delete failed, did not start or was refused; "" when
	// it did its work.
	Error string `json:"error,omitempty"`
	// Pid is the container's init pid when known, 0 otherwise.
	Pid             int          `json:"pid"`
	ExitedAt        time.Time    `json:"exited_at"`
	DurationSeconds float64      `json:"duration_seconds"`
	Steps           []StepRecord `json:"steps"`
	// Left names what is still on the machine and why, one entry per
	// failed step (its problems) and one for a task directory left in
	// place; empty when nothing is left.
	Left []string `json:"left"`
}

// StepRecord is one step of a DeleteRecord.
type StepRecord struct {
	Step            string           `json:"step"`
	Outcome         deletion.Outcome `json:"outcome"`
	DurationSeconds float64          `json:"duration_seconds"`
	Did             []string         `json:"did"`
	Problems        []string         `json:"problems"`
}

// NewDeleteRecord builds the record of a delete from what Delete returned
// (rep may be nil when the delete did not run; err is Delete's error, or
// why it was refused) and the result given (ResultOf(rep, err) when "").
// A refused delete (ResultRefused) touched nothing: its record names the
// task and why, with no steps and nothing left. Slices are never nil, so
// that JSON has [] rather than null.
func NewDeleteRecord(rep *deletion.Report, err error, result Result, trigger string) DeleteRecord {
	if result == "" {
		result = ResultOf(rep, err)
	}
	rec := DeleteRecord{Trigger: trigger, Result: result, Steps: []StepRecord{}, Left: []string{}}
	if err != nil {
		rec.Error = err.Error()
	}
	if rep == nil {
		return rec
	}
	rec.Namespace, rec.ID, rec.Bundle, rec.Pid = rep.Namespace, rep.ID, rep.Bundle, rep.Pid
	rec.ExitedAt = rep.ExitedAt
	rec.DurationSeconds = rep.Duration.Seconds()
	if result == ResultRefused {
		// The delete stopped at its shim step, having touched nothing:
		// no step did anything, and nothing is left by it.
		return rec
	}
	for _, s := range rep.Steps {
		rec.Steps = append(rec.Steps, StepRecord{
			Step:            s.Step,
			Outcome:         s.Outcome,
			DurationSeconds: s.Duration.Seconds(),
			Did:             nonNil(s.Did),
			Problems:        nonNil(s.Problems),
		})
		if s.Outcome == deletion.OutcomeFailed && s.Step != deletion.StepResolve {
			rec.Left = append(rec.Left, s.Step+": "+strings.Join(s.Problems, "; "))
		}
	}
	if errors.Is(err, deletion.ErrUnsafe) {
		rec.Left = append(rec.Left, err.Error())
	}
	return rec
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// JSON is the record as one line of JSON, newline-terminated.
func (rec DeleteRecord) JSON() []byte {
	data, err := json.Marshal(rec)
	if err != nil {
		// Strings, numbers and times only: cannot happen.
		return []byte(fmt.Sprintf("{\"error\":%q}\n", err.Error()))
	}
	return append(data, '\n')
}

// resultText says a result in words for the text reports.
func resultText(r Result) string {
	switch r {
	case ResultDeleted:
		return "deleted"
	case ResultIncomplete:
		return "deleted, something left (see below)"
	case ResultLeft:
		return "NOT deleted: task directory left in place"
	case ResultRefused:
		return "REFUSED: the shim is alive"
	}
	return "NOT run"
}

// Text is the record for a person: a summary line, the bundle, every step
// with its outcome, duration, what it did and its problems, and what was
// left. It is what `delete` prints on stderr when run by hand; containerd
// gets the shorter deletion.Report.Text.
func (rec DeleteRecord) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "robust delete %s/%s: %s", rec.Namespace, rec.ID, resultText(rec.Result))
	if len(rec.Steps) > 0 {
		fmt.Fprintf(&b, " in %s", roundDuration(rec.DurationSeconds))
	}
	b.WriteString("\n")
	if rec.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", rec.Error)
	}
	if rec.Bundle != "" {
		fmt.Fprintf(&b, "  task directory: %s\n", rec.Bundle)
	}
	for _, s := range rec.Steps {
		fmt.Fprintf(&b, "  %-8s %-13s %9s", s.Step, s.Outcome, roundDuration(s.DurationSeconds))
		if len(s.Did) > 0 {
			fmt.Fprintf(&b, "  %s", strings.Join(s.Did, "; "))
		}
		b.WriteString("\n")
		for _, p := range s.Problems {
			fmt.Fprintf(&b, "  %-8s   problem: %s\n", "", p)
		}
	}
	switch {
	case len(rec.Left) > 0:
		b.WriteString("  left:\n")
		for _, l := range rec.Left {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	case len(rec.Steps) > 0 && rec.Result != ResultError:
		b.WriteString("  left: nothing\n")
	}
	return b.String()
}

// roundDuration prints seconds as a duration rounded for reading.
func roundDuration(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

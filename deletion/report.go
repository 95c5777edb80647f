package deletion

import (
	"fmt"
	"strings"
	"time"
)

// Outcome is how a step of the delete path ended.
type Outcome string

// Outcomes, from best to worst. A step's outcome only ever gets worse as it
// records results.
const (
	// OutcomeNothing: there was nothing left for the step to do.
	OutcomeNothing Outcome = "nothing to do"
	// OutcomeDone: the step did its work.
	OutcomeDone Outcome = "done"
	// OutcomePartial: the step did what it could; something was missing,
	// corrupt or not done, and is named in Problems. Not a reason to fail.
	OutcomePartial Outcome = "partial"
	// OutcomeFailed: the step could not do its work; what is left is named.
	OutcomeFailed Outcome = "failed"
)

var outcomeRank = map[Outcome]int{"": 0, OutcomeNothing: 1, OutcomeDone: 2, OutcomePartial: 3, OutcomeFailed: 4}

// StepReport is what one step did and could not do.
type StepReport struct {
	Step     string
	Outcome  Outcome
	Did      []string
	Problems []string
	Duration time.Duration
}

func (s *StepReport) worsen(o Outcome) {
	if outcomeRank[o] > outcomeRank[s.Outcome] {
		s.Outcome = o
	}
}

// done records work done; an empty what records only the outcome.
func (s *StepReport) done(what string) {
	if what != "" {
		s.Did = append(s.Did, what)
	}
	s.worsen(OutcomeDone)
}

// note records a fact worth reporting without changing the outcome.
func (s *StepReport) note(what string) { s.Did = append(s.Did, what) }

// nothing records that there was nothing to do.
func (s *StepReport) nothing(why string) {
	s.note(why)
	s.worsen(OutcomeNothing)
}

// problem records something missing, corrupt or not done that the delete
// path works around.
func (s *StepReport) problem(err error) {
	s.Problems = append(s.Problems, err.Error())
	s.worsen(OutcomePartial)
}

// fail records something the step could not do.
func (s *StepReport) fail(err error) {
	s.Problems = append(s.Problems, err.Error())
	s.worsen(OutcomeFailed)
}

// Report is the record of one delete: every step with its outcome and
// duration, in order.
type Report struct {
	Namespace string
	ID        string
	Bundle    string
	// Pid is the container's init pid when known (exit.json, else runc
	// state, else init.pid), 0 otherwise.
	Pid int
	// ExitStatus and ExitedAt are the init's exit as containerd 2.4's shim
	// recorded it in exit.json (ExitRecorded); otherwise 128+SIGKILL and
	// the time of the delete.
	ExitStatus   int
	ExitedAt     time.Time
	ExitRecorded bool
	Steps        []StepReport
	Duration     time.Duration
}

// Failed reports whether any step failed.
func (r *Report) Failed() bool {
	for _, s := range r.Steps {
		if s.Outcome == OutcomeFailed {
			return true
		}
	}
	return false
}

// Response is the DeleteResponse containerd expects for this delete.
func (r *Report) Response() Response {
	return Response{Pid: r.Pid, ExitStatus: r.ExitStatus, ExitedAt: r.ExitedAt}
}

// slowStep is how long a step may take before Text names it with its
// duration even when it had no problem.
const slowStep = 100 * time.Millisecond

// Text is the report for stderr, which containerd logs as "cleanup
// warnings": one summary line, then one line for each step that had
// problems or was slow.
func (r *Report) Text() string {
	var b strings.Builder
	status := "deleted"
	if r.Failed() {
		status = "NOT fully deleted"
	}
	var did []string
	for _, s := range r.Steps {
		if s.Outcome == OutcomeDone || s.Outcome == OutcomePartial {
			did = append(did, s.Did...)
		}
	}
	fmt.Fprintf(&b, "robust delete %s/%s: %s in %s", r.Namespace, r.ID, status, r.Duration.Round(time.Microsecond*100))
	if len(did) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(did, "; "))
	}
	b.WriteString("\n")
	for _, s := range r.Steps {
		if len(s.Problems) == 0 && s.Duration < slowStep {
			continue
		}
		fmt.Fprintf(&b, "  %s %s in %s", s.Step, s.Outcome, s.Duration.Round(100*time.Microsecond))
		if len(s.Problems) > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(s.Problems, "; "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

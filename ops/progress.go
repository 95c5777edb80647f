package ops

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// progressEvery is how often the progress line is redrawn at most (the
// first and last counts are always drawn).
const progressEvery = 100 * time.Millisecond

// ProgressLine draws gc's progress on a terminal, in place:
// "\rgc: 340/1000 deleted, 2 failed", and a newline after the last delete
// (or at End).
// Use its Update as GCOptions.Progress.
type ProgressLine struct {
	w    io.Writer
	last time.Time
	now  func() time.Time
	open bool // a line is drawn and not ended
}

// NewProgressLine returns a ProgressLine writing to f when f is a terminal
// (an ioctl TCGETS succeeds on it), else nil: nothing is drawn into a file
// or a pipe.
func NewProgressLine(f *os.File) *ProgressLine {
	if f == nil || !IsTerminal(f) {
		return nil
	}
	return &ProgressLine{w: f, now: time.Now}
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Update draws the counts ("gc: 340/1000 deleted, 2 failed", and ", N
// left" when orphans were left at the last moment); it skips a redraw
// within progressEvery of the previous one, except for the first and the
// last. A nil ProgressLine draws nothing.
func (p *ProgressLine) Update(c GCProgress) {
	if p == nil {
		return
	}
	now := p.now()
	end := c.Done()
	if c.Deleted+c.Failed+c.Left > 0 && !end && now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	left := ""
	if c.Left > 0 {
		left = fmt.Sprintf(", %d left", c.Left)
	}
	// \x1b[K clears what a longer previous line left to the right.
	fmt.Fprintf(p.w, "\rgc: %d/%d deleted, %d failed%s\x1b[K", c.Deleted, c.Total, c.Failed, left)
	p.open = true
	if end {
		p.End()
	}
}

// End ends a line left open (gc stopped before its last delete), so that
// what follows starts on a line of its own. A nil ProgressLine does
// nothing.
func (p *ProgressLine) End() {
	if p == nil || !p.open {
		return
	}
	fmt.Fprint(p.w, "\n")
	p.open = false
}

// Func is Update as a GCOptions.Progress, nil for a nil ProgressLine (so
// that GC skips the calls).
func (p *ProgressLine) Func() func(GCProgress) {
	if p == nil {
		return nil
	}
	return p.Update
}

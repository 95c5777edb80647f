package ops

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty opens a pseudo-terminal pair; Cleanup closes both ends.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return master, tty
}

func TestProgressLine(t *testing.T) {
	t.Run("nothing when not a terminal", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		f, err := os.CreateTemp(t.TempDir(), "stderr")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, x := range []*os.File{w, f} {
			if p := NewProgressLine(x); p != nil || p.Func() != nil {
				t.Errorf("%s: a progress line on a file that is not a terminal", x.Name())
			}
		}
		var nilLine *ProgressLine
		nilLine.Update(GCProgress{Deleted: 1, Total: 2}) // draws nothing, does not panic
	})

	t.Run("a line updated in place on a terminal", func(t *testing.T) {
		master, tty := openPty(t)
		p := NewProgressLine(tty)
		if p == nil {
			t.Fatalf("%s is a terminal, yet no progress line", tty.Name())
		}
		clock := time.Unix(1000, 0)
		p.now = func() time.Time { return clock }
		update := p.Func()
		update(GCProgress{Total: 1000})             // drawn: the first
		update(GCProgress{Deleted: 1, Total: 1000}) // within 100ms: skipped
		clock = clock.Add(time.Second)
		update(GCProgress{Deleted: 340, Failed: 2, Total: 1000})          // drawn
		update(GCProgress{Deleted: 341, Failed: 2, Total: 1000})          // skipped
		update(GCProgress{Deleted: 997, Failed: 2, Left: 1, Total: 1000}) // drawn: the last, then a newline
		p.End()                                                           // nothing: the line is ended
		clock = clock.Add(time.Second)
		update(GCProgress{Total: 5}) // another sweep, stopped before its end
		p.End()
		tty.Close()
		var out bytes.Buffer
		_, _ = io.Copy(&out, master) // until EIO: the terminal is closed
		want := "\rgc: 0/1000 deleted, 0 failed\x1b[K" +
			"\rgc: 340/1000 deleted, 2 failed\x1b[K" +
			"\rgc: 997/1000 deleted, 2 failed, 1 left\x1b[K\r\n" + // the terminal's \n is \r\n
			"\rgc: 0/5 deleted, 0 failed\x1b[K\r\n"
		if got := out.String(); got != want {
			t.Errorf("terminal got %q\nwant %q", got, want)
		}
		if strings.Count(out.String(), "\n") != 2 {
			t.Errorf("not two lines: %q", out.String())
		}
	})
}

package procstat

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

func TestParse(t *testing.T) {
	// Fields 4 to 26: ppid 1, flags (field 9) 6, threads (field 20) 17,
	// start time (field 22) 777.
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20 21 22 23"
	for _, tc := range []struct {
		in   string
		want Stat
		bad  bool
	}{
		{in: "42 (sleep) S" + tail, want: Stat{State: 'S', PPid: 1, Flags: 6, Threads: 17, Start: 777}},
		{in: "42 (a) b (c) Z" + tail, want: Stat{State: 'Z', PPid: 1, Flags: 6, Threads: 17, Start: 777}},
		{in: "42 (x) R 1 2 (y)) S" + tail, want: Stat{State: 'S', PPid: 1, Flags: 6, Threads: 17, Start: 777}},
		{in: "42 ()) X" + tail, want: Stat{State: 'X', PPid: 1, Flags: 6, Threads: 17, Start: 777}},
		{in: "42 (sp ace) D" + tail, want: Stat{State: 'D', PPid: 1, Flags: 6, Threads: 17, Start: 777}},
		{in: "42 (sleep S" + tail, bad: true},
		{in: "42 (sleep) S 1 2", bad: true},
		{in: "42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x", bad: true},
		{in: "42 (sleep) SS" + tail, bad: true},
		{in: "42 (sleep) S x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777", bad: true},
		{in: "42 (sleep) S 1 2 3 4 5 x 7 8 9 10 11 12 13 14 15 16 17 18 777", bad: true},
		{in: "42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 x 18 777", bad: true},
		{in: "", bad: true},
	} {
		st, err := Parse([]byte(tc.in))
		switch {
		case tc.bad && err == nil:
			t.Errorf("Parse(%q) = %+v; want an error", tc.in, st)
		case !tc.bad && (err != nil || st != tc.want):
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, st, err, tc.want)
		}
	}
}

func TestStates(t *testing.T) {
	for _, tc := range []struct {
		st                    Stat
		zombie, exited, dying bool
	}{
		{st: Stat{State: 'S', Threads: 1}},
		{st: Stat{State: 'D', Threads: 3}},
		{st: Stat{State: 'Z', Threads: 1}, zombie: true, exited: true, dying: true},
		{st: Stat{State: 'X', Threads: 0}, zombie: true, exited: true, dying: true},
		{st: Stat{State: 'x', Threads: 1}, zombie: true, exited: true, dying: true},
		// A main thread that exited while another runs: not exited.
		{st: Stat{State: 'Z', Threads: 2}, zombie: true, dying: true},
		// In do_exit, not yet a zombie.
		{st: Stat{State: 'R', Threads: 1, Flags: PFExiting | 0x40}, dying: true},
	} {
		if got := tc.st.Zombie(); got != tc.zombie {
			t.Errorf("%+v.Zombie() = %v, want %v", tc.st, got, tc.zombie)
		}
		if got := tc.st.Exited(); got != tc.exited {
			t.Errorf("%+v.Exited() = %v, want %v", tc.st, got, tc.exited)
		}
		if got := tc.st.Dying(); got != tc.dying {
			t.Errorf("%+v.Dying() = %v, want %v", tc.st, got, tc.dying)
		}
	}
}

// TestRead reads real processes: this one, a zombie, a process whose main
// thread exited while another runs (and that thread's own stat), and a pid
// that is gone.
func TestRead(t *testing.T) {
	self, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self.PPid != os.Getppid() || self.Threads < 1 || self.Start == 0 || self.Exited() {
		t.Errorf("Read(self) = %+v; want ppid %d, threads >= 1, a start time, not exited", self, os.Getppid())
	}
	if self.Start != testutil.StartTime(t, os.Getpid()) {
		t.Errorf("Read(self).Start = %d, want %d", self.Start, testutil.StartTime(t, os.Getpid()))
	}

	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Wait()
		}
	})
	pid := cmd.Process.Pid
	if !testutil.Poll(5*time.Second, time.Millisecond, func() bool {
		st, err := Read(pid)
		return err == nil && st.State == 'Z'
	}) {
		t.Fatalf("true (%d) did not become a zombie", pid)
	}
	if st, err := Read(pid); err != nil || !st.Exited() || st.PPid != os.Getpid() {
		t.Errorf("Read(zombie %d) = %+v, %v; want Exited(), ppid %d", pid, st, err, os.Getpid())
	}
	_ = cmd.Wait()
	reaped = true
	if st, err := Read(pid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read(reaped %d) = %+v, %v; want an error wrapping fs.ErrNotExist", pid, st, err)
	}

	bin := testutil.BuildThreadedZombie(t, t.TempDir())
	z := testutil.StartThreadedZombie(t, bin, nil)
	zpid := z.Process.Pid
	st, err := Read(zpid)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'Z' || st.Threads != 2 || !st.Zombie() || st.Exited() {
		t.Errorf("Read(threaded zombie %d) = %+v; want state Z, 2 threads, Zombie() and not Exited()", zpid, st)
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(zpid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == zpid {
			continue
		}
		ts, err := ReadTask(zpid, tid)
		if err != nil {
			t.Fatalf("ReadTask(%d, %d): %v", zpid, tid, err)
		}
		if ts.Dying() || ts.Start < st.Start {
			t.Errorf("ReadTask(%d, %d) = %+v; want a live thread started no earlier than its process (%d)", zpid, tid, ts, st.Start)
		}
		running++
	}
	if running != 1 {
		t.Errorf("threaded zombie %d: %d other threads read, want 1", zpid, running)
	}
	if ts, err := ReadTask(zpid, 1<<22+1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadTask of a thread that is not there = %+v, %v; want an error wrapping fs.ErrNotExist", ts, err)
	}
}

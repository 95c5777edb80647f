package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestResidueProbeErrors: only ENOENT (ESRCH for a process) reads as gone;
// a probe that fails otherwise is a failed residue check (KindProbe), never
// "gone". The paths are real; EACCES and EIO are injected into the probe
// (root passes every permission check), ENAMETOOLONG is the kernel's own.
func TestResidueProbeErrors(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "present")
	if err := os.Mkdir(present, 0o755); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "absent")
	tooLong := filepath.Join(dir, strings.Repeat("x", 300))
	gone := exitedProc(t)
	self, err := RecordProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	socket := filepath.Join(dir, "socket")
	// failing fails the probe of path with errno; every other path is
	// probed for real.
	failing := func(path string, errno syscall.Errno) func(string) (os.FileInfo, error) {
		return func(p string) (os.FileInfo, error) {
			if p != path {
				return os.Lstat(p)
			}
			return nil, &os.PathError{Op: "lstat", Path: p, Err: errno}
		}
	}
	for _, tc := range []struct {
		name    string
		c       Container
		lstat   func(string) (os.FileInfo, error)
		procErr error
		want    string // Summary
	}{
		{name: "present bundle", c: Container{Bundle: present}, want: KindBundle},
		{name: "absent bundle", c: Container{Bundle: absent}, want: "clean"},
		{name: "absent below a file", c: Container{Bundle: filepath.Join(os.Args[0], "x")}, want: "clean"},
		{name: "name too long", c: Container{Bundle: tooLong}, want: KindProbe + " ×2"}, // and its dotted twin
		{name: "EACCES on runc state", c: Container{RuncState: absent}, lstat: failing(absent, syscall.EACCES), want: KindProbe},
		{name: "EIO on the socket", c: Container{ShimSocket: socket}, lstat: failing(socket, syscall.EIO), want: KindProbe},
		{name: "socket gone", c: Container{ShimSocket: socket}, want: "clean"},
		{name: "cgroup name too long", c: Container{Cgroups: []string{tooLong}}, want: KindProbe},
		{name: "process alive", c: Container{Procs: []Proc{self}}, want: KindProcess},
		{name: "process gone", c: Container{Procs: []Proc{gone}}, want: "clean"},
		{name: "process stat unreadable", c: Container{Procs: []Proc{self}}, procErr: syscall.EIO, want: KindProbe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.lstat != nil {
				lstat = tc.lstat
				t.Cleanup(func() { lstat = os.Lstat })
			}
			if tc.procErr != nil {
				readProcStat = func(pid int) (procStat, error) {
					return procStat{}, fmt.Errorf("read /proc/%d/stat: %w", pid, tc.procErr)
				}
				t.Cleanup(func() { readProcStat = readStat })
			}
			c := tc.c
			c.d = &Daemon{}
			for i, f := range []*string{&c.Bundle, &c.WorkDir, &c.RuncState} {
				if *f == "" {
					*f = fmt.Sprintf("%s-%d", absent, i) // and its dotted twin: absent too
				}
			}
			r := c.Residue(context.Background(), false)
			if got := r.Summary(); got != tc.want {
				t.Errorf("residue %q, want %q:\n%s", got, tc.want, r)
			}
		})
	}
}

// exitedProc records a process, then lets it exit and reaps it: its
// /proc/<pid>/stat is gone (ENOENT).
func exitedProc(t *testing.T) Proc {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := RecordProc(cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

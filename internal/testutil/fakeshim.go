package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FakeShimMode is what a fake shim does on its socket.
type FakeShimMode string

// Fake shim modes (internal/fakeshim).
const (
	// ShimSilent holds the listening socket and never accepts: a stopped
	// or deadlocked shim (the kernel still queues connections).
	ShimSilent FakeShimMode = "silent"
	// ShimAnswers serves the task API's Connect (v2 and v3): a live shim.
	ShimAnswers FakeShimMode = "answer"
)

var (
	fakeShimOnce sync.Once
	fakeShimPath string
	fakeShimErr  error
)

// fakeShimBinary builds internal/fakeshim once per test binary, as
// <tmp>/containerd-shim-runc-v2: its executable is then a shim binary's.
func fakeShimBinary(t *testing.T) string {
	t.Helper()
	fakeShimOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fakeshim-")
		if err != nil {
			fakeShimErr = err
			return
		}
		fakeShimPath = filepath.Join(dir, "containerd-shim-runc-v2")
		out, err := exec.Command("go", "build", "-o", fakeShimPath, "github.com/shimrobust/containerd-shim-runc-v2-robust/internal/fakeshim").CombinedOutput()
		if err != nil {
			fakeShimErr = err
			fakeShimPath = string(out)
		}
	})
	if fakeShimErr != nil {
		t.Fatalf("build the fake shim: %v: %s", fakeShimErr, fakeShimPath)
	}
	return fakeShimPath
}

// FakeShim starts a fake shim (internal/fakeshim, a binary named
// containerd-shim-runc-v2) with the command line `-namespace ns -id id
// -address /run/x.sock args...`. With sock set it holds, as fd 3, a unix
// socket listening there (this process closes its own copy, so the fake
// shim is the only listener) and treats it as mode says. Cleanup kills it.
func FakeShim(t *testing.T, ns, id, sock string, mode FakeShimMode, args ...string) *exec.Cmd {
	t.Helper()
	bin := fakeShimBinary(t)
	cmd := exec.Command(bin, append([]string{"-namespace", ns, "-id", id, "-address", "/run/x.sock"}, args...)...)
	cmd.Args[0] = "containerd-shim-runc-v2"
	cmd.Env = append(os.Environ(), "FAKESHIM_MODE="+string(mode))
	if sock != "" {
		f := ListenerFile(t, sock)
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Its own process group, with its child: killed together.
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
	// Wait until the runtime is up (its signal handler installed) and
	// /proc shows the command line.
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/cmdline")
		status, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
		if strings.HasPrefix(string(data), "containerd-shim-runc-v2\x00") && strings.Contains(string(status), "\nThreads:") && !strings.Contains(string(status), "\nThreads:\t1\n") {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake shim %d: command line %q", cmd.Process.Pid, data)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ListenerFile binds a unix socket listening at path and returns it as a
// file, to hand to a child (exec.Cmd.ExtraFiles): this process keeps no
// listener of its own (the socket file stays when it is closed), so the
// child is the only one holding the socket once the caller closes the file
// after starting it.
func ListenerFile(t *testing.T, path string) *os.File {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l := ln.(*net.UnixListener)
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// reapedEnv marks the child that runs the benchmark under the reaper.
const reapedEnv = "SHIM_BENCH_REAPED"

// underReaper reports whether this process is the benchmark itself, run by
// superviseReaped.
func underReaper() bool { return os.Getenv(reapedEnv) == "1" }

// superviseReaped makes this process a child subreaper, runs the program
// again as its child with the same arguments and stdio, forwards SIGINT and
// SIGTERM to it, and reaps every process that is orphaned below it until
// the child exits; it returns the child's exit status.
//
// Orphans are what the benchmark makes by the hundred: shim daemons (their
// `start` process exits), killed shims, and the processes of containers
// whose shim was killed. PID 1 on the test machines reaps them only every
// couple of seconds, and deletes would wait on it (see the package doc);
// here they are re-parented to this process and reaped at once. The
// benchmark child is not a subreaper, so its own exec.Cmd children are
// waited for by os/exec as usual and never raced.
func superviseReaped(args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "bench: become a child subreaper: %v\n", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: own executable: %v\n", err)
		return 2
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), reapedEnv+"=1")
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: start the benchmark: %v\n", err)
		return 2
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	return reapUntil(cmd.Process.Pid)
}

// reapUntil waits for any child until child exits, returns its exit status
// after reaping whatever else has already exited. Descendants still alive
// then are reparented to PID 1 when this process exits.
func reapUntil(child int) int {
	code := -1
	for code < 0 {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			fmt.Fprintf(os.Stderr, "bench: wait: %v\n", err)
			return 2
		case pid == child && ws.Exited():
			code = ws.ExitStatus()
		case pid == child && ws.Signaled():
			code = 128 + int(ws.Signal())
		}
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil && errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return code
		}
	}
}

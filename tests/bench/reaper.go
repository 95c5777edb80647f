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

// pidnsEnv marks the supervisor started as PID 1 of a pid namespace of its
// own (and a mount namespace with its own /proc).
const pidnsEnv = "SHIM_BENCH_PIDNS"

// reaperKind says how the run was reaped, for the result file: "pid 1 of
// its own pid namespace" or "child subreaper" (the fallback).
func reaperKind() string { return os.Getenv(reaperKindEnv) }

const reaperKindEnv = "SHIM_BENCH_REAPER_KIND"

// inPidNS reports whether this process is the supervisor started by
// superviseInPidNS, as PID 1 of its pid namespace.
func inPidNS() bool { return os.Getenv(pidnsEnv) == "1" && os.Getpid() == 1 }

// superviseInPidNS runs the program again as PID 1 of a new pid namespace
// with a mount namespace of its own (so that it mounts its own /proc), with
// the same arguments and stdio, forwards SIGINT and SIGTERM to it, and
// returns its exit status. That supervisor reaps every orphan of the run at
// once, as a host's init does, and is what a dead shim's container
// processes are re-parented to: their parent is 1, as on a host where
// containerd runs under systemd (a subreaper would be their parent
// instead, a process that is neither 1 nor a shim, and our delete would
// take that for a parent worth checking: a scan of /proc per delete). When
// the namespaces cannot be made, it falls back to superviseReaped.
func superviseInPidNS(args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: own executable: %v\n", err)
		return 2
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), pidnsEnv+"=1", reaperKindEnv+"=pid 1 of its own pid namespace")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		signal.Stop(sigs)
		fmt.Fprintf(os.Stderr, "bench: no pid namespace of its own (%v): the run is reaped by a child subreaper instead\n", err)
		return superviseReaped(args)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	return 2
}

// pidNSInit is the supervisor as PID 1 of its pid namespace: it makes its
// mounts private (nothing it mounts reaches the host), mounts a /proc of
// its pid namespace, and then runs the benchmark as superviseReaped does;
// every orphan of the namespace is re-parented to it. When it exits, the
// kernel kills whatever is left in the namespace.
func pidNSInit(args []string) int {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "bench: make mounts private: %v\n", err)
		return 2
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fmt.Fprintf(os.Stderr, "bench: mount /proc: %v\n", err)
		return 2
	}
	return runReaped(args)
}

// underReaper reports whether this process is the benchmark itself, run by
// runReaped.
func underReaper() bool { return os.Getenv(reapedEnv) == "1" }

// superviseReaped (the fallback of superviseInPidNS) makes this process a
// child subreaper, runs the program again as its child with the same
// arguments and stdio, forwards SIGINT and SIGTERM to it, and reaps every
// process that is orphaned below it until the child exits; it returns the
// child's exit status.
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
	if os.Getenv(reaperKindEnv) == "" {
		os.Setenv(reaperKindEnv, "child subreaper")
	}
	return runReaped(args)
}

// runReaped runs the benchmark as this process's child and reaps every
// process re-parented to this one until the child exits.
func runReaped(args []string) int {
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

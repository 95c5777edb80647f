// Command bench measures our shim against upstream's runc shim
// (containerd-shim-runc-v2 built from the same containerd module) in one run,
// on a private containerd with real runc, and prints every figure for both
// with the ratio ours/upstream:
//
//  1. delete: the `delete` command run by hand on dead tasks (containerd
//     stopped, shims killed), exactly as containerd runs it; ours and
//     upstream's interleaved task by task; median, min, max;
//  2. restart: containerd killed with N running tasks, every shim killed
//     while it is down, containerd started again; the time from its start
//     until every bundle is gone, and what was left (harness.Residue);
//  3. running: resident memory (VmRSS) of idle shims serving one container
//     each, and the latency of a container's create+start, interleaved.
//
// It also profiles our delete, on further dead tasks: the per-step
// durations of the delete path (package shim's Report) run in this process
// (warm) and in a fresh process per task (cold, as in the binary: the
// delete command's environment and working directory, and the GC percent
// the shim framework sets), interleaved with the by-hand deletes; the
// floor of starting either binary at all (`-v`) and runc
// (`runc --version`); runc's own `delete --force` of a stopped container;
// ours run again on the tasks it deleted (binary and shim framework with
// nothing to do); and, at each restart, containerd's log: its start-up
// before the first dead task, and the time per dead task.
//
// It writes the figures, the date and the machine to a JSON file
// (tests/out/bench.json by default). It never asserts a time: the targets
// of issue 4 are evaluated and printed, and the exit status says only
// whether the benchmark could run.
//
// The program re-runs itself as the child of a supervisor process that is
// a child subreaper and reaps every orphan at once, as a host's init does:
// shims daemonize, and a dead shim's container processes are re-parented
// to it. This matters for the figures: a pid namespace's init cannot
// finish exiting while a zombie of its namespace waits for a parent, so
// with a slow reaper (PID 1 on the test machines reaps only every couple of
// seconds) every delete would wait on it and runc's `delete --force` would
// poll. The supervisor is a process of its own rather than
// harness.StartReaper in this one, so that it never passes over a zombie
// whose pidfd the in-process profile holds open, and reaps at once rather
// than on a tick. Each phase runs on a daemon of its own and removes
// everything it made, even on failure; nothing is left as a zombie.
//
// It needs root, containerd, runc and a static busybox (see `make deps`);
// `make bench` builds both shims and runs it. Flags: see -h; -quick makes
// a smaller run for development, the defaults are the sizes.
package main

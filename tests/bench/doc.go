// Command bench measures our shim against upstream's runc shim
// (containerd-shim-runc-v2) in one run, on each containerd line given
// (default: Debian's containerd 1.6 and the 2.4 that `make daemons` builds),
// each against that line's own upstream shim, and prints every figure for
// both with the ratio ours/upstream and the target of issue 12 next to it.
//
// Our binary handles `delete` and `gc` itself and hands every other command
// (start, -info, the serving shim) to upstream's shim by execve. On each
// line both shims are installed in the private daemon's bin directory under
// their own names, as containerd's packages install them (harness
// DaemonConfig.Shims): ours finds upstream's next to itself as its
// delegate, so the delegate is always the baseline of the same line.
// $CONTAINERD_SHIM_ROBUST_DELEGATE is unset for the run.
//
// Phases:
//
//  0. start (no daemon): a minimal static Go binary (hello world,
//     CGO_ENABLED=0) is built in the run and timed with `ours -h` (our
//     binary's start: runtime, every package init, the usage; the figure
//     compared), `ours gc --dry-run` on an empty state directory (the
//     cheapest own path doing some work), `runc --version`, each line's
//     `upstream -v`, and `upstream -info` vs `ours -info` handed over to it
//     (what delegation adds to every command it hands over, start
//     included); in a rotating order. The minimal binary's start is the
//     machine's process-start floor, printed so that figures from machines
//     of different speed can be compared.
//
// Then on each line, each phase on a daemon of its own:
//
//  1. delete: the `delete` command run by hand on dead tasks (containerd
//     stopped, shims killed), exactly as containerd runs it; ours and
//     upstream's interleaved task by task; median, min, max;
//  2. restart: containerd killed with N running tasks, every shim killed
//     while it is down, containerd started again; the time from its start
//     until every bundle is gone, and what was left (harness.Residue);
//  3. running: the latency of a container's create+start through
//     containerd's client (ours: our binary's start, then upstream's by
//     execve), and the resident memory (VmRSS) of the idle shims serving
//     one container each (ours: upstream's binary, the delegate), with the
//     binary that serves each.
//
// It also profiles our delete, on further dead tasks: the per-step
// durations of the delete path (package deletion's Report) run in this
// process (warm) and in a fresh process per task (cold, as in the binary:
// the delete command's environment, working directory and GC percent),
// interleaved with the by-hand deletes; runc's own `delete --force` of a
// stopped container; ours run again on the tasks it deleted (the binary's
// start and a delete with nothing to do); and, at each restart,
// containerd's log (copied to bench-logs/ next to the result file): its
// start-up before the first dead task, the interval between dead tasks, and
// the steps our delete reports as slow.
//
// Last, the sweep of many orphans (`gc`, issue 12 item 4): ops' own scale
// benchmark, run as `go test ./ops -run ^$ -bench BenchmarkGCScale -benchtime 1x -gcscale=N -v` (-gc N,
// default 1000), which builds our binary from the tree and times `gc` at
// the default parallelism, `gc --parallel 1`, and the same deletes one by
// one, each on orphans laid out afresh (one in four with a live container
// process), with each one's peak RSS; its figures are read from its log.
//
// It writes the figures, the date, the machine and its load average at the
// start of every phase to a JSON file (tests/out/bench.json by default). It
// never asserts a time: the targets are evaluated and printed, and the exit
// status says only whether every phase ran and cleaned up.
//
// The program re-runs itself as PID 1 of a pid namespace of its own (with
// a mount namespace of its own, private mounts and its own /proc): that
// supervisor reaps every orphan at once, as a host's init does, and runs
// the benchmark as its child. Shims daemonize, and a dead shim's container
// processes are re-parented to it. This matters for the figures twice.
// A pid namespace's init cannot finish exiting while a zombie of its
// namespace waits for a parent, so with a slow reaper (PID 1 on the test
// machines reaps only every couple of seconds) every delete would wait on
// it and runc's `delete --force` would poll. And the container's init is
// then a child of PID 1, as on a host where containerd runs under systemd:
// with a child subreaper instead (what this program did before, and still
// does when it cannot make the namespaces) the init's parent is a process
// that is neither 1 nor a shim, our delete takes it for a possible hung
// shim and scans /proc for proof on every delete (0.1 ms here; under a
// subreaper 15-20 ms at a load average of 13, 200-500 ms at 20 with 100
// dead tasks). The supervisor is a process of its own rather than
// harness.StartReaper in this one, so that it never passes over a zombie
// whose pidfd the in-process profile holds open. Each phase runs on a
// daemon of its own and removes everything it made, even on failure;
// whatever is left when the supervisor exits dies with its namespace.
//
// It needs root, containerd, runc, a static busybox and the go command
// (see `make deps`); `make bench` builds our shim and the daemons and runs
// it. Flags: see -h; -quick makes a smaller run for development, the
// defaults are the sizes.
package main

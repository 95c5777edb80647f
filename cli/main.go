package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// Name is this binary's name in messages and in `-v`.
const Name = "containerd-shim-runc-v2-robust"

// Version is this binary's version, set at build time with
// -ldflags "-X github.com/shimrobust/containerd-shim-runc-v2-robust/cli.Version=..."
// (the Makefile sets `git describe`); else the module version Go recorded.
var Version = ""

// deleteGCPercent is the GC setting for the short-lived delete command: it
// lives for milliseconds and allocates little.
const deleteGCPercent = 400

// Main runs the binary and does not return: os.Exit(Run(os.Args[1:],
// os.Stdout, os.Stderr)).
func Main() { os.Exit(Run(os.Args[1:], os.Stdout, os.Stderr)) }

// Run runs one command line, args without the program name, and returns
// the exit status. It routes it (route):
//
//   - "gc ..." (first argument): RunGC, the sweep of orphaned tasks;
//   - "install ..." / "uninstall ..." (first argument): RunInstall, our
//     shim put into (taken out of) containerd's configuration;
//   - "... delete": the delete path (package deletion), as containerd runs
//     it (-address or $TTRPC_ADDRESS: the DeleteResponse on stdout, the
//     short report on stderr, never refused) or by hand (a live shim is
//     refused unless -force; --format json puts the JSON record on stdout);
//     a delete whose flags do not parse is ours too: ExitUsage, never the
//     delegate;
//   - "-v" / "-version": our version and the delegate's;
//   - "-h": our usage;
//   - anything else (start, -info, no arguments, the serving shim that
//     start spawns, what does not parse unless it ends in delete):
//     upstream's runc shim, by execve (package delegate), with the same
//     arguments, stdin, environment and working directory; Run returns
//     only when that fails: one line naming why (e.g. where it looked for
//     the delegate) and ExitFailed.
//
// Flags given after the action ("delete --format json") are accepted.
func Run(args []string, stdout, stderr io.Writer) int {
	r := route(args)
	switch r.to {
	case toGC:
		ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
		defer stop()
		return RunGC(ctx, args[1:], stdout, stderr)
	case toInstall, toUninstall:
		ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
		defer stop()
		return RunInstall(ctx, args[1:], r.to == toUninstall, stdout, stderr)
	case toHelp:
		usage(stdout)
		return ExitOK
	case toDelete:
		debug.SetGCPercent(deleteGCPercent)
		if r.cl.byContainerd() {
			return runContainerdDelete(context.Background(), r.cl, stdout, stderr)
		}
		return runManualDelete(context.Background(), r.cl, stdout, stderr)
	case toGCFlagsFirst:
		fmt.Fprintln(stderr, "gc takes its flags after the word gc: "+Name+" gc [flags]")
		return ExitUsage
	case toVersion:
		return printVersion(stdout, stderr)
	case toDeleteUsage:
		// Never hand a delete to upstream: it is ours, also when a newer
		// containerd passes a flag we do not know.
		fmt.Fprintf(stderr, "%s: delete: %v\n", Name, r.err)
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %v\n", Name, execDelegate(args))
	return ExitFailed
}

// destination is where route sends a command line.
type destination int

const (
	toDelegate     destination = iota // upstream's shim, by execve
	toGC                              // gc (first argument)
	toInstall                         // install (first argument)
	toUninstall                       // uninstall (first argument)
	toHelp                            // -h: our usage
	toDelete                          // ... delete: ours
	toDeleteUsage                     // ... delete whose flags do not parse: ExitUsage
	toGCFlagsFirst                    // flags, then gc: ExitUsage
	toVersion                         // -v: ours and the delegate's
)

// routed is route's answer: where the command line goes, its parse (cl,
// for a delete) and the parse error (for toDeleteUsage).
type routed struct {
	to  destination
	cl  *commandLine
	err error
}

// route is Run's routing table; see Run.
func route(args []string) routed {
	if len(args) > 0 {
		switch args[0] {
		case "gc":
			return routed{to: toGC}
		case "install":
			return routed{to: toInstall}
		case "uninstall":
			return routed{to: toUninstall}
		}
	}
	cl, err := parseCommandLine(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return routed{to: toHelp}
	case err == nil && cl.action == "delete":
		return routed{to: toDelete, cl: cl}
	case err == nil && cl.action == "gc":
		return routed{to: toGCFlagsFirst}
	case err == nil && cl.version:
		return routed{to: toVersion}
	case err != nil && len(args) > 0 && args[len(args)-1] == "delete":
		return routed{to: toDeleteUsage, err: err}
	}
	return routed{to: toDelegate}
}

// execDelegate replaces this process with the delegate (delegate.Find,
// delegate.Exec) and returns only why it could not. Tests replace it.
var execDelegate = func(args []string) error {
	path, err := delegate.Find()
	if err == nil {
		err = delegate.Exec(path, args)
	}
	return err
}

// version is Version, else the main module's version from the build info.
func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}

// printVersion prints our version, then the delegate's own `-v` output
// (or why there is none). It returns the exit status.
func printVersion(stdout, stderr io.Writer) int {
	fmt.Fprintf(stdout, "%s:\n  Version: %s\n  Delete path and gc: ours; every other command: the delegate below\n", Name, version())
	path, err := delegate.Find()
	if err != nil {
		fmt.Fprintf(stdout, "delegate: none: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(stdout, "delegate: %s\n", path)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-v").CombinedOutput()
	if err != nil {
		fmt.Fprintf(stdout, "  %s -v: %v\n", filepath.Base(path), err)
		return ExitFailed
	}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Fprintf(stdout, "  %s\n", l)
	}
	return ExitOK
}

// runContainerdDelete is `delete` as containerd runs it: it runs the delete
// path, prints the short report (or the JSON record with -format json) to
// stderr, records the metrics ($EnvMetricsDir) and writes the
// DeleteResponse to stdout. It never refuses: containerd runs delete when
// its connection to the shim closed, and a shim that still answers (a pod's
// sandbox on containerd 2.x, whose shim serves the pod's other containers)
// is left alone with its socket and the pod's other tasks
// (deletion.LeaveLiveShim), the delete doing only what upstream's does. It
// exits 1, with "name: error" on stderr as upstream's shim framework does
// (containerd then leaves the bundle alone, 1.x; 2.x removes it anyway,
// which deletion's guard stops before a mount), only when the request is
// invalid or something under the bundle could not be made safe.
func runContainerdDelete(ctx context.Context, cl *commandLine, stdout, stderr io.Writer) int {
	if err := checkFormat(cl.format); err != nil {
		fmt.Fprintf(stderr, "%s: %v", Name, err)
		return ExitFailed
	}
	// A hung or stopped shim is killed when proven to be the task's; one
	// that answers is left.
	req := deletion.Request{Namespace: cl.namespace, ID: cl.id, Bundle: cl.bundle, StateDir: resolveStateDir(cl.stateDir), LiveShim: deletion.LeaveLiveShim, ByContainerd: true}
	run := ops.RunDelete(ctx, req, ops.TriggerContainerd, ops.MetricsFromEnv())
	rep, err := run.Report, run.Err
	if rep != nil {
		if cl.format == formatJSON {
			_, _ = stderr.Write(run.Record.JSON())
		} else {
			fmt.Fprint(stderr, rep.Text())
		}
	}
	if run.MetricsErr != nil {
		fmt.Fprintf(stderr, "robust delete %s/%s: %v\n", req.Namespace, req.ID, run.MetricsErr)
	}
	if code := run.ExitStatus(); code != ExitOK {
		fmt.Fprintf(stderr, "%s: %s", Name, err)
		return code
	}
	if _, err := stdout.Write(rep.Response().Marshal()); err != nil {
		fmt.Fprintf(stderr, "%s: %s", Name, err)
		return ExitFailed
	}
	return ExitOK
}

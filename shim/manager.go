package shim

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/pause"       // upstream's pause plugin, as upstream's shim registers it
	_ "github.com/containerd/containerd/runtime/v2/runc/task/plugin" // upstream's task service, unchanged
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/containerd/sys/reaper"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// deleteGCPercent is the GC setting for the short-lived delete command.
const deleteGCPercent = 400

// RuntimeName is the runtime type that resolves to this binary
// (containerd-shim-runc-v2-robust on containerd's PATH).
const RuntimeName = "io.containerd.runc.v2-robust"

// Main runs the binary and does not return. It routes the command line:
//
//   - "gc ..." (first argument): RunGC, the sweep of orphaned tasks;
//   - "... delete" run by hand (neither -address nor $TTRPC_ADDRESS, which
//     containerd always passes): the delete path with the by-hand checks
//     and output (a live shim is refused unless -force; --format json puts
//     the JSON report on stdout instead of the DeleteResponse);
//   - anything else, containerd's commands included: containerd's shim
//     framework with upstream's runc task service and our Manager, with our
//     delete flags (-state-dir, -format, -force) registered on the global
//     flag set so that the framework's flag.Parse accepts them. On error the
//     framework prints "name: error" and exits 1.
//
// Flags given after the action ("delete --format json") are moved before
// it, where Go's flag package reads them.
func Main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "gc" {
		ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
		code := RunGC(ctx, args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if cl, err := parseCommandLine(args); err == nil {
		switch {
		case cl.action == "gc":
			fmt.Fprintln(os.Stderr, "gc takes its flags after the word gc: containerd-shim-runc-v2-robust gc [flags]")
			os.Exit(ExitUsage)
		case cl.action == "delete" && !cl.byContainerd():
			os.Exit(runManualDelete(context.Background(), cl, os.Stdout, os.Stderr))
		}
		os.Args = append([]string{os.Args[0]}, cl.args...)
	}
	m := NewManager(RuntimeName)
	m.flags.register(flag.CommandLine)
	flag.CommandLine.Usage = usage(os.Stderr, flag.CommandLine)
	shim.RunManager(context.Background(), m)
}

// Manager is a shim.Manager that delegates Name and Start to upstream's runc
// manager and replaces Stop (the `delete` command) with Delete.
type Manager struct {
	name     string
	upstream shim.Manager
	// flags are our delete flags, filled by the framework's flag.Parse
	// when Main registered them; their zero values otherwise.
	flags *deleteFlags
}

var _ shim.Manager = (*Manager)(nil)

// NewManager returns a Manager reporting name as its runtime name.
func NewManager(name string) *Manager {
	return &Manager{name: name, upstream: manager.NewShimManager(name), flags: &deleteFlags{format: formatText}}
}

// Name returns the runtime name given to NewManager.
func (m *Manager) Name() string { return m.name }

// Start is upstream's: it starts the long-running shim serving the task API.
func (m *Manager) Start(ctx context.Context, id string, opts shim.StartOpts) (string, error) {
	return m.upstream.Start(ctx, id, opts)
}

// Stop is the `delete` command as containerd runs it: it runs Delete for
// the task, prints its report to stderr (the concise Report.Text, or the
// JSON record with -format json) and records the metrics ($EnvMetricsDir).
// It never refuses a live shim: containerd runs delete only for dead ones.
// It returns an error (the framework then exits 1 and containerd leaves the
// bundle alone) only when Delete says something under the bundle could not
// be made safe: a mount left, or a proven container process still alive.
func (m *Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	var bundlePath string
	if o, ok := ctx.Value(shim.OptsKey{}).(shim.Opts); ok {
		bundlePath = o.BundlePath
	}
	// The framework reaps every child on SIGCHLD during delete; the runtime
	// must be waited for through the same reaper or its exit status is lost.
	runcC.Monitor = reaper.Default
	// The framework tunes the GC for a long-running shim (40%); a delete
	// lives for milliseconds and allocates little: let it not collect.
	debug.SetGCPercent(deleteGCPercent)

	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{"id": id, "namespace": ns, "bundle": bundlePath}))
	rep, err := Delete(ctx, Request{Namespace: ns, ID: id, Bundle: bundlePath, StateDir: resolveStateDir(m.flags.stateDir)})
	rec := NewDeleteRecord(rep, err, "", TriggerContainerd)
	if rep != nil {
		if m.flags.format == formatJSON {
			_, _ = os.Stderr.Write(rec.JSON())
		} else {
			fmt.Fprint(os.Stderr, rep.Text())
		}
	}
	if merr := MetricsFromEnv().RecordDelete(rec); merr != nil {
		fmt.Fprintf(os.Stderr, "robust delete %s/%s: %v\n", ns, id, merr)
	}
	if err != nil {
		return shim.StopStatus{}, err
	}
	return rep.StopStatus(), nil
}

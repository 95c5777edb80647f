package shim

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/runc/manager"
	_ "github.com/containerd/containerd/runtime/v2/runc/pause"        // upstream's pause plugin, as upstream's shim registers it
	_ "github.com/containerd/containerd/runtime/v2/runc/task/plugin" // upstream's task service, unchanged
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/containerd/sys/reaper"
	runcC "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// RuntimeName is the runtime type that resolves to this binary
// (containerd-shim-runc-v2-robust on containerd's PATH).
const RuntimeName = "io.containerd.runc.v2-robust"

// Main runs the shim: containerd's shim framework with upstream's runc task
// service and our Manager. It does not return on error (the framework exits 1).
func Main() {
	shim.RunManager(context.Background(), NewManager(RuntimeName))
}

// Manager is a shim.Manager that delegates Name and Start to upstream's runc
// manager and replaces Stop (the `delete` command) with Delete.
type Manager struct {
	name     string
	upstream shim.Manager
}

var _ shim.Manager = (*Manager)(nil)

// NewManager returns a Manager reporting name as its runtime name.
func NewManager(name string) *Manager {
	return &Manager{name: name, upstream: manager.NewShimManager(name)}
}

// Name returns the runtime name given to NewManager.
func (m *Manager) Name() string { return m.name }

// Start is upstream's: it starts the long-running shim serving the task API.
func (m *Manager) Start(ctx context.Context, id string, opts shim.StartOpts) (string, error) {
	return m.upstream.Start(ctx, id, opts)
}

// Stop is the `delete` command: it runs Delete for the task and prints its
// report to stderr. It returns an error (the framework then exits 1 and
// containerd leaves the bundle alone) only when Delete says something under
// the bundle could not be made safe: a mount left, or a proven container
// process still alive.
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

	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{"id": id, "namespace": ns, "bundle": bundlePath}))
	rep, err := Delete(ctx, Request{Namespace: ns, ID: id, Bundle: bundlePath})
	if rep != nil {
		fmt.Fprint(os.Stderr, rep.Text())
	}
	if err != nil {
		return shim.StopStatus{}, err
	}
	return rep.StopStatus(), nil
}

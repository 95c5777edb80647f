// Command fakeshim stands in for a containerd shim in the unit tests of
// liveness and deletion (built by testutil.FakeShim under the name
// containerd-shim-runc-v2, so that its executable is a shim binary's). It
// takes a shim's command line (-namespace NS -id ID ...), holds the
// listening unix socket it inherits as fd 3 (if any), and, by
// $FAKESHIM_MODE:
//   - "answer": serves containerd's task API v2 and v3 Connect on it, as a
//     live shim does (any other call gets an error status);
//   - "silent" (default): never accepts, as a stopped or deadlocked shim.
//
// It also starts `sleep` as its child (in its process group), which tests use as
// the container's init whose parent is the shim. It runs until killed. It
// is never built into the product.
package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
)

func main() {
	var l net.Listener
	if f := os.NewFile(3, "listener"); f != nil {
		if ln, err := net.FileListener(f); err == nil {
			l = ln
		}
		f.Close()
	}
	if l != nil && os.Getenv("FAKESHIM_MODE") == "answer" {
		s, err := ttrpc.NewServer()
		if err != nil {
			os.Exit(1)
		}
		connect := func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			var req taskv2.ConnectRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			return &taskv2.ConnectResponse{ShimPid: uint32(os.Getpid())}, nil
		}
		for _, svc := range []string{"containerd.task.v2.Task", "containerd.task.v3.Task"} {
			s.RegisterService(svc, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{"Connect": connect}})
		}
		go func() { _ = s.Serve(context.Background(), l) }()
	}
	// In the fake shim's process group: testutil.FakeShim's cleanup kills
	// the group. (Pdeathsig would tie it to the thread that forked it,
	// which the Go runtime may retire.)
	child := exec.Command("sleep", "100000")
	_ = child.Start()
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	<-c
}

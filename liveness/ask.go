package liveness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// AskTimeout bounds asking a shim (connect and one call of the task API).
// containerd gives the whole delete command 5 s
// (io.containerd.timeout.shim.cleanup); a shim that serves its tasks
// answers Connect in well under a millisecond.
const AskTimeout = time.Second

// Verdict is what asking a task's shim found.
type Verdict int

const (
	// ShimDead: nothing listens at the task's socket (missing, refused, not
	// a socket), or the task has no socket address: no shim serves the
	// task there.
	ShimDead Verdict = iota
	// ShimHung: the connection was accepted but no answer came within the
	// bound, or the shim closed the connection without answering: a shim
	// stopped, deadlocked or stuck. It serves nothing; it may be killed
	// with proof that it is the task's.
	ShimHung
	// ShimAnswers: the shim answered a call of the task API (an error
	// status is an answer too): it is alive and may serve other tasks (a
	// pod's containers on containerd 2.x). It is never signalled by a
	// delete containerd runs.
	ShimAnswers
	// ShimUnknown: the socket could not be asked (permission denied, a
	// full backlog, an address that is not unix://PATH, ...): nothing is
	// ruled out, and the shim counts as alive.
	ShimUnknown
)

func (v Verdict) String() string {
	switch v {
	case ShimDead:
		return "dead"
	case ShimHung:
		return "hung"
	case ShimAnswers:
		return "alive"
	default:
		return "unknown"
	}
}

// Answer is the verdict and what it rests on.
type Answer struct {
	Verdict Verdict
	// Why says what was found, e.g. "socket /run/containerd/s/ab answered
	// containerd.task.v3.Task.Connect (shim pid 4711)".
	Why string
}

// Alive reports whether the shim must be treated as alive by a delete by
// hand without -force and by gc: it answers, or nothing can be ruled out.
// A hung shim is not alive for a delete containerd runs, but gc and a
// delete by hand without -force leave it too (see Prober.Probe).
func (a Answer) Alive() bool { return a.Verdict == ShimAnswers || a.Verdict == ShimUnknown }

// Task API services of the shim: v2 (containerd 1.6 and 1.7, whose shims
// write an `address` file) and v3 (2.x, bootstrap.json version 3). A shim
// asked for the other version answers with an error status, which is an
// answer all the same.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// AskShim asks the shim of b's task whether it is alive: it connects to
// the task's socket (b.Address) and makes one call of the task API,
// Connect for the task's id, within timeout (AskTimeout when 0) and ctx.
// Connect only reads the shim's and the task's pids: it changes nothing in
// the shim. The task API version is v3 when the task directory has a
// bootstrap.json of version 3 or more (containerd 2.x), else v2.
func AskShim(ctx context.Context, b *bundle.Bundle, timeout time.Duration) Answer {
	if b.Address == "" {
		return Answer{ShimDead, "no shim address"}
	}
	return ask(ctx, b.Address, b.ID, b.TaskAPI >= 3, timeout)
}

// ask is AskShim on an address.
func ask(ctx context.Context, address, id string, v3 bool, timeout time.Duration) Answer {
	if timeout <= 0 {
		timeout = AskTimeout
	}
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok || path == "" {
		return Answer{ShimUnknown, fmt.Sprintf("shim address %q is not unix://PATH: cannot ask it", address)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// A connect to a unix socket is accepted into the backlog or refused
	// at once, also when the shim is stopped; the dial shares the bound.
	switch state, err := bundle.ProbeSocket(path, timeout); state {
	case bundle.SocketMissing:
		return Answer{ShimDead, fmt.Sprintf("socket %s is missing", path)}
	case bundle.SocketDead:
		return Answer{ShimDead, fmt.Sprintf("socket %s refuses connections", path)}
	case bundle.SocketLive:
	default:
		return Answer{ShimUnknown, fmt.Sprintf("cannot tell whether socket %s is live: %v", path, err)}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		// Accepted a moment ago: whatever failed now cannot rule it out.
		return Answer{ShimUnknown, fmt.Sprintf("socket %s: %v", path, err)}
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()

	// v2's and v3's ConnectRequest and ConnectResponse are wire-identical
	// (id = 1; shim_pid = 1, task_pid = 2, version = 3): v2's generated
	// types serve both, and v3's package, which links gRPC's whole client
	// into every delete, is not needed.
	service := taskServiceV2
	if v3 {
		service = taskServiceV3
	}
	var resp taskv2.ConnectResponse
	err = client.Call(ctx, service, "Connect", &taskv2.ConnectRequest{ID: id}, &resp)
	shimPid := resp.GetShimPid()
	call := service + ".Connect"
	switch {
	case err == nil:
		return Answer{ShimAnswers, fmt.Sprintf("socket %s answered %s (shim pid %d)", path, call, shimPid)}
	case isStatus(err):
		return Answer{ShimAnswers, fmt.Sprintf("socket %s answered %s: %v", path, call, err)}
	case errors.Is(err, context.DeadlineExceeded):
		return Answer{ShimHung, fmt.Sprintf("socket %s accepted the connection but %s got no answer within %s", path, call, timeout)}
	case errors.Is(err, context.Canceled):
		return Answer{ShimUnknown, fmt.Sprintf("socket %s: %s: %v", path, call, err)}
	default:
		// ttrpc: closed, a reset, a protocol error: the connection ended
		// without an answer.
		return Answer{ShimHung, fmt.Sprintf("socket %s accepted the connection but gave no answer to %s: %v", path, call, err)}
	}
}

// isStatus reports whether err is a status the shim sent back (ttrpc
// decodes the response's status into a gRPC status error).
func isStatus(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se)
}

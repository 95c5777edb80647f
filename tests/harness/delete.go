package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"google.golang.org/protobuf/proto"
)

// ShimCleanupTimeout is containerd's io.containerd.timeout.shim.cleanup
// default: the whole `delete` must fit in it.
const ShimCleanupTimeout = 5 * time.Second

// DeleteResult is the outcome of one `shim delete` run by hand.
type DeleteResult struct {
	ExitCode int // -1 when it did not exit by itself (timeout, signal)
	Stdout   []byte
	Stderr   string
	Duration time.Duration
	Err      error // from running it: nil on exit 0
	// Response is stdout decoded as the framework's DeleteResponse; nil when
	// it does not decode.
	Response *taskapi.DeleteResponse
}

// DeleteCommand is the command containerd 1.6/1.7 runs to clean up after a
// dead shim (runtime/v2/binary.go, runtime/v2/shim/util.go): the same
// arguments, environment and working directory (the bundle). When the
// bundle no longer exists (a second delete), it runs in the bundle's parent
// instead, since no process can start in a missing directory.
func (c *Container) DeleteCommand(ctx context.Context) *exec.Cmd {
	d := c.d
	cmd := exec.CommandContext(ctx, d.ShimPath(c.Cfg.Runtime),
		"-namespace", c.Cfg.Namespace,
		"-address", d.Address,
		"-publish-binary", d.Binary(),
		"-id", c.Cfg.ID,
		"-bundle", c.Bundle,
		"delete")
	cmd.Dir = c.Bundle
	if _, err := os.Stat(c.Bundle); err != nil {
		cmd.Dir = filepath.Dir(c.Bundle)
	}
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env,
		"PATH="+d.PathEnv(),
		"GOMAXPROCS=2",
		"MAX_SHIM_VERSION=2",
		"TTRPC_ADDRESS="+d.TTRPCAddress,
		"GRPC_ADDRESS="+d.Address,
		"NAMESPACE="+c.Cfg.Namespace,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// RunDelete runs the shim's `delete` by hand, as containerd would, bounded
// by containerd's cleanup timeout.
func (c *Container) RunDelete(ctx context.Context) DeleteResult {
	ctx, cancel := context.WithTimeout(ctx, ShimCleanupTimeout)
	defer cancel()
	cmd := c.DeleteCommand(ctx)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res := DeleteResult{
		ExitCode: -1,
		Stdout:   out.Bytes(),
		Stderr:   errb.String(),
		Duration: time.Since(start),
		Err:      err,
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
	}
	var resp taskapi.DeleteResponse
	if proto.Unmarshal(res.Stdout, &resp) == nil {
		res.Response = &resp
	}
	return res
}

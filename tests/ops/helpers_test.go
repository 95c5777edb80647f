package ops

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/cli"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/promtest"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// settle bounds the polling of a residue until it is empty.
const settle = 3 * time.Second

// stateDir is the daemon's runtime v2 task state directory.
func stateDir() string { return filepath.Join(daemon.State, "io.containerd.runtime.v2.task") }

// startContainer runs a container on the daemon and registers a cleanup
// that removes whatever the test leaves, pass or fail.
func startContainer(t *testing.T, runtime, ns, id string) *harness.Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := daemon.Run(ctx, harness.ContainerConfig{Namespace: ns, ID: id, Runtime: runtime, Busybox: busybox})
	if err != nil {
		t.Fatalf("start container: %v\n--- containerd log (tail) ---\n%s", err, daemon.LogTail(30))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.Cleanup(ctx); err != nil {
			t.Errorf("harness cleanup of %s: %v", id, err)
		}
	})
	if len(c.Procs) < 4 {
		t.Fatalf("recorded %d processes, want init, 2 children and the exec'd one: %v", len(c.Procs), c.Procs)
	}
	return c
}

// result is one run of our binary.
type result struct {
	code           int
	stdout, stderr string
}

// run runs our binary as an operator would: from directory dir, without
// any of containerd's environment (TTRPC_ADDRESS...) or ours, plus env.
func run(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ours, args...)
	cmd.Dir = dir
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "PATH", "TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", ops.EnvMetricsDir, cli.EnvStateDir:
			continue
		}
		cmd.Env = append(cmd.Env, e)
	}
	cmd.Env = append(cmd.Env, "PATH="+daemon.PathEnv())
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{code: -1, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.code = 0
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run %s %q: %v", ours, args, err)
	}
	t.Logf("$ (cd %s && %s %s) -> exit %d\n--- stderr:\n%s", dir, filepath.Base(ours), strings.Join(args, " "), res.code, res.stderr)
	return res
}

// mountsUnder lists the mount points at or below dir in this mount
// namespace, from /proc/self/mountinfo.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	return out
}

// metric is one expected sample.
type metric struct {
	name    string
	labels  []string
	want    float64
	atLeast bool
}

func checkMetrics(t *testing.T, fams promtest.Families, ms []metric) {
	t.Helper()
	for _, m := range ms {
		got, ok := fams.Value(m.name, m.labels...)
		switch {
		case !ok:
			t.Errorf("metric %s%v missing", m.name, m.labels)
		case m.atLeast && got < m.want:
			t.Errorf("metric %s%v = %v, want at least %v", m.name, m.labels, got, m.want)
		case !m.atLeast && got != m.want:
			t.Errorf("metric %s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
}

package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Namespace is the containerd namespace of CRI's pods and images.
const Namespace = "k8s.io"

// StartTimeout bounds how long Start waits for containerd and its CRI
// plugin to serve.
const StartTimeout = 60 * time.Second

// DaemonConfig says which containerd to run and with which shims.
type DaemonConfig struct {
	// Binary is the containerd binary (with the CRI plugin built in).
	Binary string
	// Shims maps a binary name on the daemon's PATH (ShimRobustBinary,
	// ShimUpstreamBinary) to the file installed under it.
	Shims map[string]string
	// SandboxImage is the CRI sandbox ("pause") image reference; the test
	// imports it after start.
	SandboxImage string
	// Dir is the parent of the daemon's temp directory ("" = os.TempDir()).
	Dir string
	// Setup is the set-up of the robust handler; nil means the one the
	// README recommends for the daemon's version (SetupFor).
	Setup *Setup
}

// Daemon is one private containerd with the CRI plugin: its own root,
// state, sockets, CNI directories (empty) and bin directory, never the
// machine's defaults.
type Daemon struct {
	cfg DaemonConfig

	Dir          string
	Root         string
	State        string
	Address      string // gRPC socket (containerd API and CRI)
	TTRPCAddress string
	ConfigPath   string
	BinDir       string // shims by binary name; first on the daemon's PATH
	CNIBinDir    string
	CNIConfDir   string
	LogPath      string
	// Version is `containerd --version`'s version field, known before the
	// first start; Setup is the robust handler's set-up and ConfigVersion
	// the configuration file's version (2 on 1.x, 3 on 2.x).
	Version       string
	Setup         Setup
	ConfigVersion ConfigVersion

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	client  *containerd.Client
	conn    *grpc.ClientConn
	exits   *harness.ExitRecorder
	cancel  context.CancelFunc
}

// NewDaemon creates the daemon's directories, installs copies of the shims
// and writes the configuration for the set-up its version calls for. It
// does not start it.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	version, err := binaryVersion(cfg.Binary)
	if err != nil {
		return nil, err
	}
	setup, err := SetupFor(version)
	if err != nil {
		return nil, err
	}
	if cfg.Setup != nil {
		setup = *cfg.Setup
	}
	cv, err := ConfigVersionFor(version)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "cri-containerd-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:           cfg,
		Dir:           dir,
		Root:          filepath.Join(dir, "root"),
		State:         filepath.Join(dir, "state"),
		Address:       filepath.Join(dir, "containerd.sock"),
		TTRPCAddress:  filepath.Join(dir, "containerd.sock.ttrpc"),
		ConfigPath:    filepath.Join(dir, "config.toml"),
		BinDir:        filepath.Join(dir, "bin"),
		CNIBinDir:     filepath.Join(dir, "cni", "bin"),
		CNIConfDir:    filepath.Join(dir, "cni", "conf"),
		LogPath:       filepath.Join(dir, "containerd.log"),
		Version:       version,
		Setup:         setup,
		ConfigVersion: cv,
	}
	for _, p := range []string{d.Root, d.State, d.BinDir, d.CNIBinDir, d.CNIConfDir} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return nil, err
		}
	}
	for name, src := range cfg.Shims {
		// A copy: a rebuild during the run must not change the binary under
		// test half-way.
		if err := harness.CopyFile(src, d.ShimPath(name), 0o755); err != nil {
			return nil, fmt.Errorf("install %s: %w", name, err)
		}
	}
	if err := os.WriteFile(d.ConfigPath, []byte(d.daemonConfig()), 0o600); err != nil {
		return nil, err
	}
	return d, nil
}

// binaryVersion runs `containerd --version` ("containerd <pkg> <version>
// <revision>") and returns the version field.
func binaryVersion(bin string) (string, error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "", fmt.Errorf("%s --version: unexpected %q", bin, out)
	}
	return f[2], nil
}

// ShimPath is the installed shim binary of that name.
func (d *Daemon) ShimPath(name string) string { return filepath.Join(d.BinDir, name) }

// Binary is the containerd binary the daemon runs.
func (d *Daemon) Binary() string { return d.cfg.Binary }

// PathEnv is the PATH the daemon (and so every shim and runc) runs with:
// the bin directory first, so that upstream's shim shadows Debian's.
func (d *Daemon) PathEnv() string {
	return d.BinDir + ":" + harness.SearchPath()
}

// Start starts the daemon and waits (bounded by StartTimeout) until both the
// containerd API and the CRI runtime service answer. On failure the error
// carries the tail of the daemon's log.
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		select {
		case <-d.done:
			d.cmd = nil
		default:
			return errors.New("containerd already running")
		}
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(d.cfg.Binary, "--config", d.ConfigPath)
	// No delegate named from outside: our shim must find the upstream shim
	// installed next to it, as the README's set-up has it.
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") && !strings.HasPrefix(e, delegate.EnvDelegate+"=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "PATH="+d.PathEnv())
	cmd.Dir = d.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start containerd: %w", err)
	}
	done := make(chan struct{})
	d.cmd, d.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		d.mu.Lock()
		d.waitErr = err
		d.mu.Unlock()
		close(done)
	}()
	fail := func(err error) error {
		_ = cmd.Process.Kill()
		<-done
		d.cmd = nil
		return fmt.Errorf("%w\n--- containerd log (tail) ---\n%s", err, d.LogTail(40))
	}

	var (
		client  *containerd.Client
		conn    *grpc.ClientConn
		lastErr error
		exited  bool
	)
	ok := harness.Poll(StartTimeout, 100*time.Millisecond, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		if _, err := os.Stat(d.Address); err != nil {
			lastErr = err
			return false
		}
		if client == nil {
			c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second),
				containerd.WithDefaultNamespace(Namespace))
			if err != nil {
				lastErr = err
				return false
			}
			client = c
		}
		if conn == nil {
			c, err := grpc.NewClient("unix://"+d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				lastErr = err
				return false
			}
			conn = c
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := client.Version(cctx); err != nil {
			lastErr = err
			return false
		}
		st, err := runtimeapi.NewRuntimeServiceClient(conn).Status(cctx, &runtimeapi.StatusRequest{})
		if err != nil {
			lastErr = fmt.Errorf("CRI status: %w", err)
			return false
		}
		for _, c := range st.GetStatus().GetConditions() {
			if c.Type == runtimeapi.RuntimeReady && !c.Status {
				lastErr = fmt.Errorf("CRI RuntimeReady false: %s %s", c.Reason, c.Message)
				return false
			}
		}
		return true
	})
	closeClients := func() {
		if client != nil {
			client.Close()
		}
		if conn != nil {
			conn.Close()
		}
	}
	if exited {
		closeClients()
		return fail(fmt.Errorf("containerd exited during start-up: %v", d.waitErr))
	}
	if !ok {
		closeClients()
		return fail(fmt.Errorf("containerd's CRI plugin did not serve on %s within %s: %v", d.Address, StartTimeout, lastErr))
	}
	sctx, cancel := context.WithCancel(context.Background())
	rec, err := harness.SubscribeExits(sctx, client)
	if err != nil {
		cancel()
		closeClients()
		return fail(err)
	}
	d.client, d.conn, d.exits, d.cancel = client, conn, rec, cancel
	return nil
}

// Running reports whether the daemon process is up.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Pid is the daemon's pid, 0 when it is not running.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Client is containerd's client (default namespace k8s.io); nil when the
// daemon is not running.
func (d *Daemon) Client() *containerd.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// Runtime is the CRI runtime service client; nil when the daemon is not
// running.
func (d *Daemon) Runtime() runtimeapi.RuntimeServiceClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return nil
	}
	return runtimeapi.NewRuntimeServiceClient(d.conn)
}

// Images is the CRI image service client; nil when the daemon is not
// running.
func (d *Daemon) Images() runtimeapi.ImageServiceClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == nil {
		return nil
	}
	return runtimeapi.NewImageServiceClient(d.conn)
}

// Stop sends SIGTERM and waits (15 s) for the daemon to exit, then kills
// it. Shims keep running, as in production.
func (d *Daemon) Stop() error { return d.halt(syscall.SIGTERM, 15*time.Second) }

// Kill SIGKILLs the daemon and waits for it to exit.
func (d *Daemon) Kill() error { return d.halt(syscall.SIGKILL, 15*time.Second) }

func (d *Daemon) halt(sig syscall.Signal, grace time.Duration) error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	if d.client != nil {
		d.client.Close()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	if d.cancel != nil {
		d.cancel()
	}
	d.client, d.conn, d.exits, d.cancel = nil, nil, nil, nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("containerd pid %d did not exit after SIGKILL", cmd.Process.Pid)
		}
	}
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
	return nil
}

// Close stops the daemon and removes its directory unless a mount is left
// below it (then the directory stays and the error says so).
func (d *Daemon) Close() error {
	err := d.Stop()
	if ms := harness.MountsUnder([]int{0}, d.Dir); len(ms) > 0 {
		return errors.Join(err, fmt.Errorf("mounts left under %s: %v; directory kept", d.Dir, ms))
	}
	return errors.Join(err, os.RemoveAll(d.Dir))
}

// LogTail is the last n lines of the daemon's log.
func (d *Daemon) LogTail(n int) string { return harness.TailFile(d.LogPath, n) }

// LogSize is the current length of the daemon's log, for LogSince.
func (d *Daemon) LogSize() int64 {
	fi, err := os.Stat(d.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogSince returns the daemon's log from byte offset off.
func (d *Daemon) LogSince(off int64) string {
	data, err := os.ReadFile(d.LogPath)
	if err != nil || int64(len(data)) < off {
		return ""
	}
	return string(data[off:])
}

// WaitExit waits (bounded by timeout) for containerd's TaskExit of the
// init process of task id (namespace k8s.io) published since the daemon's
// last start: after a shim's death containerd publishes it with the status
// the shim's `delete` reported, or 255 when the delete failed.
func (d *Daemon) WaitExit(id string, timeout time.Duration) (*eventstypes.TaskExit, bool) {
	d.mu.Lock()
	rec := d.exits
	d.mu.Unlock()
	if rec == nil {
		return nil, false
	}
	return rec.Wait(Namespace, id, timeout)
}

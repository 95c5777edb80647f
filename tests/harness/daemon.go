package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"
)

// Runtime names under test and the shim binaries containerd resolves them to.
const (
	// RuntimeRobust is our shim's runtime name; containerd runs
	// containerd-shim-runc-v2-robust for it.
	RuntimeRobust = "io.containerd.runc.v2-robust"
	// RuntimeUpstream is upstream's runc shim; containerd runs
	// containerd-shim-runc-v2 for it.
	RuntimeUpstream = "io.containerd.runc.v2"
)

// ShimBinaryName is the binary containerd looks up on its PATH for a runtime
// name "io.containerd.NAME.VERSION": containerd-shim-NAME-VERSION.
func ShimBinaryName(runtime string) string {
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 {
		return "containerd-shim-" + runtime
	}
	return "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
}

// StartTimeout bounds how long Start waits for the daemon to serve.
const StartTimeout = 60 * time.Second

// DaemonConfig says which containerd to run and with which shims.
type DaemonConfig struct {
	// Binary is the containerd binary.
	Binary string
	// Shims maps a runtime name (RuntimeRobust, RuntimeUpstream) to the shim
	// binary to install for it in the daemon's bin directory.
	Shims map[string]string
	// CgroupV2View runs the daemon in a private mount namespace whose
	// /sys/fs/cgroup is a cgroup2 mount: the shims and runc see a pure
	// cgroup v2 machine (with no controllers on a hybrid host).
	CgroupV2View bool
	// Dir is the parent of the daemon's temp directory ("" = os.TempDir()).
	Dir string
}

// Daemon is one private containerd: its own root, state directory, sockets
// and bin directory, never the machine's defaults. It is stopped, killed and
// restarted with the same configuration.
type Daemon struct {
	cfg DaemonConfig

	Dir          string // temp directory owning everything below
	Root         string // containerd root (persistent data, work dirs)
	State        string // containerd state (bundles)
	Address      string // gRPC socket
	TTRPCAddress string // ttrpc socket
	ConfigPath   string
	BinDir       string // shims by runtime name; first on the daemon's PATH
	LogPath      string // stdout+stderr of every start, appended
	Version      string // containerd's version string, set by Start

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	client  *containerd.Client
	exits   *ExitRecorder
	cancel  context.CancelFunc
}

// offMachinePlugins keeps start-up fast and keeps a private daemon off the
// machine's paths: no /opt/containerd, no snapshotters the suites do not
// use, no tracing, no NRI socket.
var offMachinePlugins = []string{
	"io.containerd.internal.v1.opt",
	"io.containerd.snapshotter.v1.aufs",
	"io.containerd.snapshotter.v1.btrfs",
	"io.containerd.snapshotter.v1.devmapper",
	"io.containerd.snapshotter.v1.zfs",
	"io.containerd.tracing.processor.v1.otlp",
	"io.containerd.internal.v1.tracing",
	"io.containerd.nri.v1.nri",
}

// BaseConfig renders what every private containerd's configuration
// (version 2) starts with: its own root, state directory and gRPC and ttrpc
// sockets, log level info, and as disabled plugins those in disable, then
// those that would reach the machine's paths or slow start-up.
func BaseConfig(root, state, address, ttrpcAddress string, disable ...string) string {
	disabled := append(append([]string(nil), disable...), offMachinePlugins...)
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [%s]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"
`, root, state, strings.Join(quoted, ", "), address, ttrpcAddress)
}

// NewDaemon creates the daemon's directories, configuration and bin
// directory. It does not start it.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("containerd binary: %w", err)
	}
	dir, err := os.MkdirTemp(cfg.Dir, "e2e-containerd-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg:          cfg,
		Dir:          dir,
		Root:         filepath.Join(dir, "root"),
		State:        filepath.Join(dir, "state"),
		Address:      filepath.Join(dir, "containerd.sock"),
		TTRPCAddress: filepath.Join(dir, "containerd.sock.ttrpc"),
		ConfigPath:   filepath.Join(dir, "config.toml"),
		BinDir:       filepath.Join(dir, "bin"),
		LogPath:      filepath.Join(dir, "containerd.log"),
	}
	for _, p := range []string{d.Root, d.State, d.BinDir} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return nil, err
		}
	}
	for runtime, src := range cfg.Shims {
		// A copy, not a link: a rebuild during the run must not change the
		// binary under test half-way.
		if err := CopyFile(src, filepath.Join(d.BinDir, ShimBinaryName(runtime)), 0o755); err != nil {
			return nil, fmt.Errorf("install shim for %s: %w", runtime, err)
		}
	}
	// No CRI: the suites drive containerd's own API.
	conf := BaseConfig(d.Root, d.State, d.Address, d.TTRPCAddress, "io.containerd.grpc.v1.cri")
	if err := os.WriteFile(d.ConfigPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if cfg.CgroupV2View {
		wrapper := `#!/bin/sh
# Give this mount namespace (private, made by unshare) a pure cgroup v2 view.
set -e
# On a cgroup v2 host it is one already (mounting it again there is EBUSY).
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || mount -t cgroup2 cgroup2 /sys/fs/cgroup
exec "$@"
`
		if err := os.WriteFile(filepath.Join(dir, "cgroup2-view.sh"), []byte(wrapper), 0o755); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// ShimPath is the installed shim binary for runtime.
func (d *Daemon) ShimPath(runtime string) string {
	return filepath.Join(d.BinDir, ShimBinaryName(runtime))
}

// Binary is the containerd binary the daemon runs.
func (d *Daemon) Binary() string { return d.cfg.Binary }

// CgroupV2View reports whether the daemon runs with a pure cgroup2 view.
func (d *Daemon) CgroupV2View() bool { return d.cfg.CgroupV2View }

// PathEnv is the PATH the daemon (and so every shim and runc) runs with.
func (d *Daemon) PathEnv() string {
	return d.BinDir + ":" + SearchPath()
}

func (d *Daemon) command() *exec.Cmd {
	args := []string{d.cfg.Binary, "--config", d.ConfigPath}
	if d.cfg.CgroupV2View {
		// unshare execs without forking, and so does the wrapper: the pid of
		// the command is containerd's.
		args = append([]string{"unshare", "--mount", "--propagation", "private",
			"/bin/sh", filepath.Join(d.Dir, "cgroup2-view.sh")}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "PATH="+d.PathEnv())
	cmd.Dir = d.Dir
	// Die with the test binary rather than outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// StartDaemon is NewDaemon then Start, within StartTimeout and a margin
// for the event subscription; a daemon that does not start is closed
// (its directories removed) and the error says which binary it was.
func StartDaemon(ctx context.Context, cfg DaemonConfig) (*Daemon, error) {
	d, err := NewDaemon(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, StartTimeout+10*time.Second)
	defer cancel()
	if err := d.Start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start containerd %s: %w", cfg.Binary, err), d.Close())
	}
	return d, nil
}

// Start starts the daemon and waits until it serves (bounded by
// StartTimeout) and its event subscription is live. On failure the error
// carries the tail of the daemon's log.
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		select {
		case <-d.done:
			d.cmd = nil // it died by itself: start afresh
		default:
			return errors.New("containerd already running")
		}
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := d.command()
	cmd.Stdout, cmd.Stderr = logf, logf
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
		// The waiter takes d.mu to record the exit: let it.
		d.mu.Unlock()
		<-done
		d.mu.Lock()
		d.cmd = nil
		return fmt.Errorf("%w\n--- containerd log (tail) ---\n%s", err, d.LogTail(40))
	}
	var client *containerd.Client
	ok := Poll(StartTimeout, 50*time.Millisecond, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		if _, err := os.Stat(d.Address); err != nil {
			return false
		}
		c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second))
		if err != nil {
			return false
		}
		v, err := c.Version(ctx)
		if err != nil {
			c.Close()
			return false
		}
		d.Version = v.Version
		client = c
		return true
	})
	select {
	case <-done:
		return fail(fmt.Errorf("containerd exited during start-up: %v", d.waitErr))
	default:
	}
	if !ok || client == nil {
		return fail(fmt.Errorf("containerd did not serve on %s within %s", d.Address, StartTimeout))
	}
	d.client = client
	if d.cfg.CgroupV2View {
		if err := d.checkCgroup2View(); err != nil {
			client.Close()
			d.client = nil
			return fail(err)
		}
	}
	sctx, cancel := context.WithCancel(context.Background())
	rec, err := SubscribeExits(sctx, client)
	if err != nil {
		cancel()
		client.Close()
		d.client = nil
		return fail(err)
	}
	d.exits, d.cancel = rec, cancel
	return nil
}

func (d *Daemon) checkCgroup2View() error {
	ms, err := readMountinfo(d.cmd.Process.Pid)
	if err != nil {
		return err
	}
	var fstype string
	for _, m := range ms {
		if m.MountPoint == "/sys/fs/cgroup" {
			fstype = m.FSType // the last mount on a point is the visible one
		}
	}
	if fstype != "cgroup2" {
		return fmt.Errorf("daemon's /sys/fs/cgroup is %q, want cgroup2", fstype)
	}
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
		return false // died by itself
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

// Client is the daemon's client; nil when it is not running.
func (d *Daemon) Client() *containerd.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// Stop sends SIGTERM and waits (15 s) for the daemon to exit, then kills it.
// Shims keep running, as they do when containerd is stopped in production.
func (d *Daemon) Stop() error { return d.halt(syscall.SIGTERM, 15*time.Second) }

// Kill SIGKILLs the daemon and waits for it to exit.
func (d *Daemon) Kill() error { return d.halt(syscall.SIGKILL, 15*time.Second) }

func (d *Daemon) halt(sig syscall.Signal, grace time.Duration) error {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	if cmd == nil {
		d.mu.Unlock()
		return nil
	}
	if d.cancel != nil {
		d.cancel()
	}
	if d.client != nil {
		d.client.Close()
	}
	d.client, d.exits, d.cancel = nil, nil, nil
	d.mu.Unlock()

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

// Restart stops the daemon (if running) and starts it again with the same
// configuration.
func (d *Daemon) Restart(ctx context.Context) error {
	if err := d.Stop(); err != nil {
		return err
	}
	return d.Start(ctx)
}

// Close stops the daemon and removes its directory unless a mount is left
// below it (then the directory stays and the error says so).
func (d *Daemon) Close() error {
	err := d.Stop()
	if ms := MountsUnder([]int{0}, d.Dir); len(ms) > 0 {
		return errors.Join(err, fmt.Errorf("mounts left under %s: %v; directory kept", d.Dir, ms))
	}
	return errors.Join(err, os.RemoveAll(d.Dir))
}

// WaitExit waits (bounded by timeout) for a TaskExit event of the init
// process of namespace/id published since the daemon's last start.
func (d *Daemon) WaitExit(ns, id string, timeout time.Duration) (*eventstypes.TaskExit, bool) {
	d.mu.Lock()
	rec := d.exits
	d.mu.Unlock()
	if rec == nil {
		return nil, false
	}
	return rec.Wait(ns, id, timeout)
}

// LogTail is the last n lines of the daemon's log.
func (d *Daemon) LogTail(n int) string { return TailFile(d.LogPath, n) }

// TailFile is the last n lines of file path, or the error reading it.
func TailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LogSince returns the daemon's log from byte offset off, and the new end.
func (d *Daemon) LogSince(off int64) (string, int64) {
	data, err := os.ReadFile(d.LogPath)
	if err != nil || int64(len(data)) < off {
		return "", off
	}
	return string(data[off:]), int64(len(data))
}

// ExitRecorder keeps every TaskExit of an init process seen on one
// subscription, keyed by namespace/container id.
type ExitRecorder struct {
	mu    sync.Mutex
	exits map[string]*eventstypes.TaskExit
	wake  chan struct{}
}

const syncTopic = "/e2e/sync"

// SubscribeExits subscribes to /tasks/exit and proves the subscription is
// live before returning: it publishes an event of its own and waits for it
// to come back, so no exit published afterwards can be missed. The
// subscription ends with ctx.
func SubscribeExits(ctx context.Context, client *containerd.Client) (*ExitRecorder, error) {
	rec := &ExitRecorder{exits: map[string]*eventstypes.TaskExit{}, wake: make(chan struct{})}
	ch, errs := client.Subscribe(ctx, `topic=="/tasks/exit"`, `topic=="`+syncTopic+`"`)
	synced := make(chan struct{})
	token := fmt.Sprintf("sync-%d", time.Now().UnixNano())
	go func() {
		var once sync.Once
		for {
			select {
			case env, ok := <-ch:
				if !ok {
					return
				}
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					continue
				}
				ev, ok := v.(*eventstypes.TaskExit)
				if !ok {
					continue
				}
				if env.Topic == syncTopic {
					if ev.ID == token {
						once.Do(func() { close(synced) })
					}
					continue
				}
				if ev.ID != ev.ContainerID {
					continue // an exec'd process
				}
				rec.mu.Lock()
				rec.exits[env.Namespace+"/"+ev.ContainerID] = ev
				close(rec.wake)
				rec.wake = make(chan struct{})
				rec.mu.Unlock()
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	pctx := namespaces.WithNamespace(ctx, "e2e-sync")
	deadline := time.After(10 * time.Second)
	for {
		if err := client.EventService().Publish(pctx, syncTopic, &eventstypes.TaskExit{ID: token}); err != nil {
			return nil, fmt.Errorf("publish sync event: %w", err)
		}
		select {
		case <-synced:
			return rec, nil
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return nil, errors.New("event subscription did not deliver the sync event within 10s")
		}
	}
}

// Wait waits (bounded by timeout) for the TaskExit of the init process of
// container id in namespace ns.
func (r *ExitRecorder) Wait(ns, id string, timeout time.Duration) (*eventstypes.TaskExit, bool) {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ev, wake := r.exits[ns+"/"+id], r.wake
		r.mu.Unlock()
		if ev != nil {
			return ev, true
		}
		select {
		case <-wake:
		case <-deadline:
			return nil, false
		}
	}
}

// CopyFile copies src to dst (created or truncated with mode).
func CopyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// envDelegate is our binary's variable naming upstream's shim
// (delegate.EnvDelegate; this module does not import the product's).
const envDelegate = "CONTAINERD_SHIM_ROBUST_DELEGATE"

// shimName is the runc v2 shim's binary name: containerd looks it up on
// its PATH for runtime io.containerd.runc.v2.
const shimName = "containerd-shim-runc-v2"

// install is one flavour's bin directory: containerd under a unique name
// (containerd's CRI tests restart it with `pkill -x ^NAME$` and wait with
// `pidof NAME`: the name must match no other containerd on the machine),
// containerd again under its own name (integration/client's TestMain starts
// "containerd" from PATH), and containerd-shim-runc-v2: upstream's, or
// ours — then upstream's is in up/ and named by $envDelegate, as a user who
// installs ours under upstream's name must do.
type install struct {
	flavor   string // "upstream" or "ours"
	dir      string // work directory of the flavour (all its files)
	binDir   string
	daemon   string // unique name of the containerd copy
	delegate string // ours only: upstream's shim
}

func newInstall(work, line, flavor, containerd, upstreamShim, ours string) (*install, error) {
	dir, err := os.MkdirTemp(work, flavor+"-")
	if err != nil {
		return nil, err
	}
	in := &install{flavor: flavor, dir: dir, binDir: filepath.Join(dir, "bin"),
		daemon: "peer" + strings.ReplaceAll(line, ".", "") + "-" + flavor}
	if len(in.daemon) > 15 {
		return nil, fmt.Errorf("daemon name %q is longer than a process name (15)", in.daemon)
	}
	if err := os.MkdirAll(in.binDir, 0o755); err != nil {
		return nil, err
	}
	copies := map[string]string{
		filepath.Join(in.binDir, in.daemon):    containerd,
		filepath.Join(in.binDir, "containerd"): containerd,
	}
	if flavor == "ours" {
		in.delegate = filepath.Join(dir, "up", shimName)
		copies[in.delegate] = upstreamShim
		copies[filepath.Join(in.binDir, shimName)] = ours
	} else {
		copies[filepath.Join(in.binDir, shimName)] = upstreamShim
	}
	for dst, src := range copies {
		if err := copyFile(src, dst); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// env is the environment of containerd and of the test binaries (whose
// daemons inherit it): the bin directory first on PATH, the delegate named
// for ours and unset for upstream's.
func (in *install) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "PATH=") && !strings.HasPrefix(e, envDelegate+"=") {
			env = append(env, e)
		}
	}
	env = append(env, "PATH="+in.binDir+":"+os.Getenv("PATH")+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if in.delegate != "" {
		env = append(env, envDelegate+"="+in.delegate)
	}
	return env
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func appendFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(b)
	return err
}

// criDaemon is a private containerd with CRI, kept running by a supervisor
// (as containerd's CI keeps it with a restart loop): the CRI tests kill it
// to restart it.
type criDaemon struct {
	in         *install
	v2         bool // containerd 2.x: configuration version 3
	root       string
	state      string
	addr       string
	config     string
	logPath    string
	cniConf    string
	runcRoot   string
	network    string // CNI network name
	bridge     string // its bridge interface
	subnet     string
	sandboxRef string

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	starts  int
	done    chan struct{}
}

func newCRIDaemon(in *install, v2 bool, netIndex int, sandboxRef string) (*criDaemon, error) {
	d := &criDaemon{
		in: in, v2: v2,
		root:       filepath.Join(in.dir, "root"),
		state:      filepath.Join(in.dir, "state"),
		addr:       filepath.Join(in.dir, "containerd.sock"),
		config:     filepath.Join(in.dir, "config.toml"),
		logPath:    filepath.Join(in.dir, "containerd.log"),
		cniConf:    filepath.Join(in.dir, "cni"),
		runcRoot:   filepath.Join(in.dir, "runc"),
		network:    in.daemon,
		bridge:     fmt.Sprintf("peer%d", netIndex),
		subnet:     fmt.Sprintf("10.177.%d.0/24", netIndex),
		sandboxRef: sandboxRef,
		done:       make(chan struct{}),
	}
	for _, p := range []string{d.root, d.state, d.cniConf, d.runcRoot} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return nil, err
		}
	}
	// host-local keeps its leases in /var/lib/cni (TestSandboxRemoveWithoutIPLeakage
	// looks there): a network name of our own.
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, d.network, d.bridge, d.subnet)
	if err := os.WriteFile(filepath.Join(d.cniConf, "10-peer.conflist"), []byte(cni), 0o644); err != nil {
		return nil, err
	}
	return d, os.WriteFile(d.config, []byte(d.render()), 0o600)
}

// disabledPlugins keep the daemon off the machine's paths (no /opt/containerd,
// no NRI socket, no tracing) and start-up short.
var disabledPlugins = []string{
	"io.containerd.internal.v1.opt",
	"io.containerd.snapshotter.v1.aufs",
	"io.containerd.snapshotter.v1.btrfs",
	"io.containerd.snapshotter.v1.devmapper",
	"io.containerd.snapshotter.v1.zfs",
	"io.containerd.tracing.processor.v1.otlp",
	"io.containerd.internal.v1.tracing",
	"io.containerd.nri.v1.nri",
}

// render writes the configuration: version 3 on 2.x (CRI split into
// io.containerd.cri.v1.images and io.containerd.cri.v1.runtime), version 2
// on 1.7; runtime `runc` (io.containerd.runc.v2, the shim found on PATH) the
// default, runc's state under the work directory, netns mounts under the
// state directory, the CNI bridge network.
func (d *criDaemon) render() string {
	var dis []string
	for _, p := range disabledPlugins {
		dis = append(dis, strconv.Quote(p))
	}
	base := fmt.Sprintf(`root = %q
state = %q
disabled_plugins = [%s]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "info"
`, d.root, d.state, strings.Join(dis, ", "), d.addr, d.addr+".ttrpc")
	if d.v2 {
		return "version = 3\n" + base + fmt.Sprintf(`
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q

[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, d.sandboxRef, d.cniConf, d.runcRoot)
	}
	return "version = 2\n" + base + fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, d.sandboxRef, d.cniConf, d.runcRoot)
}

// restartDelay is how long the supervisor waits after containerd exited:
// RestartContainerd polls pidof every second until containerd is gone.
const restartDelay = 3 * time.Second

// start runs the supervisor and waits (bounded) until containerd says it
// booted.
func (d *criDaemon) start() error {
	go d.supervise()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(d.logPath); strings.Contains(string(b), "containerd successfully booted") {
			if c, err := net.DialTimeout("unix", d.addr, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-d.done:
			return fmt.Errorf("containerd supervisor ended:\n%s", tail(d.logPath, 30))
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("containerd did not boot within 60s:\n%s", tail(d.logPath, 30))
}

func (d *criDaemon) supervise() {
	defer close(d.done)
	for {
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		logf, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			d.mu.Unlock()
			return
		}
		fmt.Fprintf(logf, "=== peer: start %d at %s\n", d.starts+1, time.Now().Format(time.RFC3339Nano))
		cmd := exec.Command(filepath.Join(d.in.binDir, d.in.daemon), "--config", d.config)
		cmd.Env, cmd.Dir = d.in.env(), d.in.dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(logf, "=== peer: start failed: %v\n", err)
			logf.Close()
			d.mu.Unlock()
			return
		}
		d.cmd = cmd
		d.starts++
		d.mu.Unlock()
		err = cmd.Wait()
		fmt.Fprintf(logf, "=== peer: containerd exited: %v\n", err)
		logf.Close()
		d.mu.Lock()
		stopped := d.stopped
		d.mu.Unlock()
		if stopped {
			return
		}
		time.Sleep(restartDelay)
	}
}

// stop ends the supervisor and containerd: SIGTERM, SIGKILL after 15 s.
func (d *criDaemon) stop() {
	d.mu.Lock()
	d.stopped = true
	cmd := d.cmd
	d.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
		<-d.done
	}
}

func (d *criDaemon) restarts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starts - 1
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup removes what a flavour's daemons left when tests failed: shims
// serving one of addrs (SIGKILL), runc containers whose bundle is under one
// of dirs (runc delete --force), every mount under dirs (deepest first,
// detached), then dirs themselves, and the CNI bridge and host-local
// leases of network. It touches nothing else and says what it did.
func cleanup(logf func(string, ...any), addrs, dirs []string, bridge, network string) {
	if n := killShims(addrs); n > 0 {
		logf("cleanup: killed %d shim(s) left serving %v", n, addrs)
	}
	for _, root := range runcRoots(dirs) {
		for _, c := range runcList(root) {
			if under(c.Bundle, dirs) {
				out, err := exec.Command("runc", "--root", root, "delete", "--force", c.ID).CombinedOutput()
				logf("cleanup: runc --root %s delete --force %s: %v %s", root, c.ID, err, strings.TrimSpace(string(out)))
			}
		}
	}
	mounts := mountsUnder(dirs)
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			logf("cleanup: umount %s: %v", m, err)
		}
	}
	if len(mounts) > 0 {
		logf("cleanup: unmounted %d mount(s) left", len(mounts))
	}
	if left := mountsUnder(dirs); len(left) > 0 {
		logf("cleanup: NOT removing %v: mounts still there: %v", dirs, left)
	} else {
		for _, d := range dirs {
			if err := os.RemoveAll(d); err != nil {
				logf("cleanup: remove %s: %v", d, err)
			}
		}
	}
	if bridge != "" {
		if _, err := net.InterfaceByName(bridge); err == nil {
			out, err := exec.Command("ip", "link", "del", bridge).CombinedOutput()
			if err != nil {
				logf("cleanup: ip link del %s: %v %s", bridge, err, out)
			}
		}
	}
	if network != "" {
		_ = os.RemoveAll(filepath.Join("/var/lib/cni/networks", network))
		if ents, err := os.ReadDir("/var/lib/cni/results"); err == nil {
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), network+"-") {
					_ = os.Remove(filepath.Join("/var/lib/cni/results", e.Name()))
				}
			}
		}
	}
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// killShims SIGKILLs every process whose arguments hold "-address A" for one
// of addrs (a shim of that containerd) and returns how many.
func killShims(addrs []string) int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if (args[i] == "-address" || args[i] == "--address") && contains(addrs, args[i+1]) &&
				strings.Contains(filepath.Base(args[0]), "containerd-shim") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				n++
				break
			}
		}
	}
	return n
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// runcRoots are the runc state roots our containers can be in: per
// namespace under each dir's runc/ (the CRI runtime's Root option), and
// under runc's default for containerd (/run/containerd/runc/<ns>: client
// tests and tasks created without options).
func runcRoots(dirs []string) []string {
	var roots []string
	for _, parent := range append(append([]string{}, dirs...), "/run/containerd") {
		ents, _ := os.ReadDir(filepath.Join(parent, "runc"))
		for _, e := range ents {
			if e.IsDir() {
				roots = append(roots, filepath.Join(parent, "runc", e.Name()))
			}
		}
	}
	return roots
}

type runcContainer struct {
	ID     string `json:"id"`
	Bundle string `json:"bundle"`
}

func runcList(root string) []runcContainer {
	out, err := exec.Command("runc", "--root", root, "list", "-f", "json").Output()
	if err != nil {
		return nil
	}
	var cs []runcContainer
	_ = json.Unmarshal(out, &cs)
	return cs
}

// mountsUnder lists mount points under dirs, deepest first.
func mountsUnder(dirs []string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if mp := unescape(fields[4]); under(mp, dirs) {
			ms = append(ms, mp)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

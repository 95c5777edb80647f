package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// Mode is what install configures.
type Mode string

const (
	// ModeRuntimeClass adds a CRI runtime Options.Handler served by our
	// binary, with the runc runtime's options.
	ModeRuntimeClass Mode = "runtime-class"
	// ModeDefault serves containerd's default CRI runtime (runc) by our
	// binary.
	ModeDefault Mode = "default"
)

// Defaults.
const (
	DefaultHandler  = "robust"
	DefaultShimPath = "/usr/local/bin/containerd-shim-runc-v2-robust"
	DefaultAddress  = "/run/containerd/containerd.sock"
	DefaultStateDir = "/var/lib/containerd-shim-runc-v2-robust/install"
	DefaultTimeout  = 60 * time.Second
)

// Options are install's and uninstall's flags.
type Options struct {
	Mode    Mode
	Handler string
	// ReplaceShimBinary also serves non-CRI clients: UpstreamShim is
	// dpkg-diverted (renamed to delegate.DivertedName beside it) and our
	// binary (ShimPath's bytes) put in its place. --mode default only.
	ReplaceShimBinary bool
	// UpstreamShim is upstream's binary as the host names it (default
	// DefaultUpstreamShim); its name must be delegate.BinaryName.
	UpstreamShim string
	// DpkgDivert is this process's dpkg-divert (PATH looked up), run
	// with --root HostRoot under --host-root.
	DpkgDivert string
	// Config is containerd's main file as the host names it.
	Config string
	// HostRoot is where the host's root is mounted ("/" on the host).
	HostRoot  string
	DryRun    bool
	NoRestart bool
	// NoContainerCheck skips the check that a container starts with
	// ShimPath (ctr run, see CtrRunArgs) after the restart.
	NoContainerCheck bool
	// ShimPath is our binary as the host names it.
	ShimPath string
	// Containerd is containerd's binary (host's name; PATH looked up).
	Containerd string
	// RestartCommand restarts containerd; nil: `systemctl restart
	// containerd` (through nsenter into PID 1's mount namespace when
	// HostRoot is not "/").
	RestartCommand []string
	// Address is containerd's gRPC socket as the host names it.
	Address string
	// StateDir is where install keeps what it wrote (host's name).
	StateDir string
	Timeout  time.Duration
	Stdout   io.Writer
}

func (o *Options) defaults() {
	if o.Mode == "" {
		o.Mode = ModeRuntimeClass
	}
	if o.Handler == "" {
		o.Handler = DefaultHandler
	}
	if o.Config == "" {
		o.Config = ops.DefaultContainerdConfig
	}
	if o.HostRoot == "" {
		o.HostRoot = "/"
	}
	if o.ShimPath == "" {
		o.ShimPath = DefaultShimPath
	}
	if o.Containerd == "" {
		o.Containerd = "containerd"
	}
	if o.Address == "" {
		o.Address = DefaultAddress
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.UpstreamShim == "" {
		o.UpstreamShim = DefaultUpstreamShim
	}
	if o.DpkgDivert == "" {
		o.DpkgDivert = "dpkg-divert"
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
}

// host returns the path p of the host as this process reaches it.
func (o *Options) host(p string) string { return filepath.Join(o.HostRoot, p) }

// onHost returns argv run in the host's root: as is on the host, through
// chroot under --host-root.
func (o *Options) onHost(argv ...string) []string {
	if o.HostRoot == "/" {
		return argv
	}
	return append([]string{"chroot", o.HostRoot}, argv...)
}

// state is what install wrote, kept in Options.StateDir.
type state struct {
	Mode        Mode   `json:"mode"`
	Handler     string `json:"handler"`
	Main        string `json:"main"`
	MainMode    uint32 `json:"main_mode"`
	MainWritten string `json:"main_written_sha256,omitempty"` // "" when the main file was not edited
	DropIn      string `json:"dropin"`
	CreatedDir  string `json:"created_dir,omitempty"`
	// Diverted is upstream's binary that --replace-shim-binary diverted
	// (to delegate.DivertedName beside it); "" when none.
	Diverted    string `json:"diverted,omitempty"`
	ShimWritten string `json:"shim_written_sha256,omitempty"` // our bytes at Diverted
}

const (
	stateFile    = "state.json"
	originalFile = "main.toml.orig"
)

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func (o *Options) readState() (*state, []byte, error) {
	b, err := os.ReadFile(filepath.Join(o.host(o.StateDir), stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("install state %s: %w", o.StateDir, err)
	}
	orig, err := os.ReadFile(filepath.Join(o.host(o.StateDir), originalFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	return &s, orig, nil
}

// Plan is what install writes: the main file (unchanged when it already
// imports a directory the drop-in goes to) and the drop-in.
type Plan struct {
	Version    int
	Plugin     string
	Setup      Setup
	Main       string // host's name
	MainBefore []byte
	MainAfter  []byte
	MainMode   fs.FileMode
	DropIn     string // host's name
	DropInData []byte
	DropInOld  []byte // nil when absent
	DirToMake  string // host's name; "" when it exists
}

// plan computes what install would write for containerd version cv.
func (o *Options) plan(ctx context.Context, cv string) (*Plan, error) {
	setup, err := SetupFor(cv)
	if err != nil {
		return nil, err
	}
	p := &Plan{Main: o.Config, Setup: setup}
	data, err := ops.ReadConfigFile(o.host(o.Config))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	fi, err := os.Stat(o.host(o.Config))
	if err != nil {
		return nil, err
	}
	p.MainBefore, p.MainMode = data, fi.Mode().Perm()
	main, err := parseFile(o.Config, data)
	if err != nil {
		return nil, err
	}
	if p.Version, err = fileVersion(o.Config, main); err != nil {
		return nil, err
	}
	if p.Plugin, err = CRIPlugin(p.Version); err != nil {
		return nil, err
	}
	imports, err := stringList(o.Config, "imports", main)
	if err != nil {
		return nil, err
	}
	if dir := globDir(o.Config, imports); dir != "" {
		p.DropIn = filepath.Join(dir, DropInName)
		p.MainAfter = data
		if _, err := os.Stat(o.host(dir)); errors.Is(err, fs.ErrNotExist) {
			p.DirToMake = dir
		}
	} else {
		p.DropIn = filepath.Join(filepath.Dir(o.Config), DropInName)
		if p.MainAfter, err = addImport(o.Config, data, p.Version, p.DropIn); err != nil {
			return nil, err
		}
	}
	if old, err := os.ReadFile(o.host(p.DropIn)); err == nil {
		p.DropInOld = old
	}
	// The CRI table as the files before the drop-in leave it: containerd
	// 1.x replaces a plugin's table whole with a later file's.
	cri := table(main, "plugins", p.Plugin)
	loaded := map[string]bool{o.Config: true, p.DropIn: true}
	pending := imports
	from := o.Config
	for len(pending) > 0 {
		var next []string
		for _, imp := range pending {
			imp = filepath.Clean(imp)
			if !filepath.IsAbs(imp) {
				imp = filepath.Join(filepath.Dir(from), imp)
			}
			var names []string
			if strings.Contains(imp, "*") {
				m, _ := filepath.Glob(o.host(imp))
				for _, x := range m {
					rel, _ := filepath.Rel(o.HostRoot, x)
					names = append(names, "/"+rel)
				}
			} else {
				names = []string{imp}
			}
			for _, n := range names {
				if loaded[n] {
					continue
				}
				loaded[n] = true
				b, err := ops.ReadConfigFile(o.host(n))
				if err != nil {
					return nil, fmt.Errorf("%w: import: %v", ErrConfig, err)
				}
				m, err := parseFile(n, b)
				if err != nil {
					return nil, err
				}
				if t := table(m, "plugins", p.Plugin); t != nil {
					cri = t
				}
				sub, err := stringList(n, "imports", m)
				if err != nil {
					return nil, err
				}
				next = append(next, sub...)
			}
		}
		pending = next
	}
	var tbl map[string]any
	if cri != nil {
		tbl = deepCopy(cri).(map[string]any)
	} else {
		tbl = map[string]any{}
	}
	ctrd, _ := tbl["containerd"].(map[string]any)
	if ctrd == nil {
		ctrd = map[string]any{}
		tbl["containerd"] = ctrd
	}
	runtimes, _ := ctrd["runtimes"].(map[string]any)
	if runtimes == nil {
		runtimes = map[string]any{}
		ctrd["runtimes"] = runtimes
	}
	defName, _ := ctrd["default_runtime_name"].(string)
	if defName == "" {
		defName = "runc"
	}
	runcRT, _ := runtimes[defName].(map[string]any)
	if o.Mode == ModeDefault && runcRT == nil {
		runcRT = map[string]any{"runtime_type": RuntimeTypeRunc}
	}
	options := map[string]any(nil)
	if runcRT != nil {
		options, _ = runcRT["options"].(map[string]any)
	}
	if options == nil && setup == SetupRuntimePath {
		options = o.dumpedRuncOptions(ctx, defName)
	}
	var rt map[string]any
	switch o.Mode {
	case ModeRuntimeClass:
		rt = map[string]any{}
		runtimes[o.Handler] = rt
	case ModeDefault:
		rt = runcRT
		runtimes[defName] = rt
	default:
		return nil, fmt.Errorf("mode %q: runtime-class or default", o.Mode)
	}
	switch setup {
	case SetupRuntimePath:
		rt["runtime_type"] = RuntimeTypeRunc
		rt["runtime_path"] = o.ShimPath
		if options != nil {
			rt["options"] = deepCopy(options)
		}
	case SetupRuntimeType:
		rt["runtime_type"] = RuntimeTypeRobust
		delete(rt, "runtime_path")
		delete(rt, "options") // 1.6.0-1.6.20 drop them; some fail every start
	}
	header := fmt.Sprintf("Written by containerd-shim-runc-v2-robust install --mode %s; removed by uninstall.\n"+
		"It carries the whole %s table of %s (containerd 1.x replaces a plugin's table\nwith an imported file's): edit that table here while it is installed.", o.Mode, p.Plugin, o.Config)
	if p.DropInData, err = renderDropIn(p.Version, p.Plugin, tbl, header); err != nil {
		return nil, err
	}
	return p, nil
}

// dumpedRuncOptions returns the options of runtime name from `containerd
// config dump` of the main file (containerd's defaults merged in), or nil.
func (o *Options) dumpedRuncOptions(ctx context.Context, name string) map[string]any {
	m, err := o.dump(ctx)
	if err != nil {
		return nil
	}
	for _, pl := range []string{PluginCRIv3, PluginCRIv2} {
		if opts := table(m, "plugins", pl, "containerd", "runtimes", name, "options"); opts != nil {
			return opts
		}
	}
	return nil
}

func (o *Options) run(ctx context.Context, argv ...string) ([]byte, error) {
	return o.runEnv(ctx, nil, argv...)
}

// runEnv is run with env added to this process's environment.
func (o *Options) runEnv(ctx context.Context, env []string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(lastLines(stderr.String(), 5)))
	}
	return out, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// dump is `containerd --config MAIN config dump`, parsed.
func (o *Options) dump(ctx context.Context) (map[string]any, error) {
	out, err := o.run(ctx, o.onHost(o.Containerd, "--config", o.Config, "config", "dump")...)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := toml.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("containerd config dump: %w", err)
	}
	return m, nil
}

func (o *Options) containerdVersion(ctx context.Context) (string, error) {
	out, err := o.run(ctx, o.onHost(o.Containerd, "--version")...)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp := path + ".robust-tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

package cri

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Runtime handler names: the RuntimeClass handler kubelet passes to
// RunPodSandbox, and the CRI runtime table that serves it.
const (
	// HandlerRobust is served by our shim.
	HandlerRobust = "robust"
	// HandlerRunc is served by upstream's runc shim, for comparison.
	HandlerRunc = "runc"
)

// Shim binaries as containerd looks them up on its PATH, and where the
// README tells users to install ours.
const (
	ShimRobustBinary   = "containerd-shim-runc-v2-robust"
	ShimUpstreamBinary = "containerd-shim-runc-v2"
	InstallPath        = "/usr/local/bin/" + ShimRobustBinary
)

// Setup is one way of configuring a CRI runtime handler to run our shim.
type Setup int

const (
	// SetupRuntimeType names the shim through its runtime type
	// (io.containerd.runc.v2-robust, binary on containerd's PATH) with no
	// options table: CRI then sends no runc options. Works with every
	// containerd 1.6 and 1.7, and is the only set-up for containerd
	// 1.6.0-1.6.20, which ignore runtime_path.
	SetupRuntimeType Setup = iota
	// SetupRuntimePath keeps the runtime type io.containerd.runc.v2 (so CRI
	// decodes runc options) and points runtime_path at the shim. Needs
	// containerd >= 1.6.21 or >= 1.7.1.
	SetupRuntimePath
)

func (s Setup) String() string {
	switch s {
	case SetupRuntimeType:
		return "runtime type"
	case SetupRuntimePath:
		return "runtime path"
	}
	return fmt.Sprintf("setup(%d)", int(s))
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)\.(\d+)`)

// SetupFor returns the set-up the README recommends for a containerd
// version string ("1.6.20~ds1", "v1.7.35"): the runtime path where
// containerd honours it (1.6.21+, 1.7.1+, 2.x), the runtime type before. An
// unparsable version is an error.
func SetupFor(version string) (Setup, error) {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return 0, fmt.Errorf("containerd version %q: no major.minor.patch", version)
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	switch {
	case v[0] > 1, v[0] == 1 && v[1] > 7:
		return SetupRuntimePath, nil
	case v[0] == 1 && v[1] == 7 && v[2] >= 1:
		return SetupRuntimePath, nil
	case v[0] == 1 && v[1] == 6 && v[2] >= 21:
		return SetupRuntimePath, nil
	}
	return SetupRuntimeType, nil
}

// ConfigVersion is the version of containerd's configuration file: 2 on
// containerd 1.6 and 1.7 (CRI plugin io.containerd.grpc.v1.cri), 3 on 2.x
// (CRI split into io.containerd.cri.v1.runtime and io.containerd.cri.v1.images).
type ConfigVersion int

const (
	ConfigV2 ConfigVersion = 2
	ConfigV3 ConfigVersion = 3
)

// ConfigVersionFor returns the configuration version the README gives for a
// containerd version string: 3 from 2.0 on, 2 before.
func ConfigVersionFor(version string) (ConfigVersion, error) {
	m := versionRE.FindStringSubmatch(version)
	if m == nil {
		return 0, fmt.Errorf("containerd version %q: no major.minor.patch", version)
	}
	if major, _ := strconv.Atoi(m[1]); major >= 2 {
		return ConfigV3, nil
	}
	return ConfigV2, nil
}

// CRI plugins of each configuration version: where the runtime handlers
// are (criRuntimePlugin) and where the snapshotter and sandbox image are
// (criImagesPlugin).
func criRuntimePlugin(v ConfigVersion) string {
	if v >= ConfigV3 {
		return `plugins.'io.containerd.cri.v1.runtime'`
	}
	return `plugins."io.containerd.grpc.v1.cri"`
}

func criImagesPlugin(v ConfigVersion) string {
	if v >= ConfigV3 {
		return `plugins.'io.containerd.cri.v1.images'`
	}
	return `plugins."io.containerd.grpc.v1.cri"`
}

// tomlString quotes s as containerd writes its configuration of that
// version: basic strings in version 2 (as 1.x's `config default`),
// literal strings in version 3 (as 2.x's), unless s holds a quote or a
// control character.
func tomlString(v ConfigVersion, s string) string {
	if v >= ConfigV3 && !strings.ContainsAny(s, "'\n\r\t") {
		return "'" + s + "'"
	}
	return strconv.Quote(s)
}

// HandlerConfig renders the containerd configuration (version v) of runtime
// handler name served by our shim with set-up s. shimPath is the shim
// binary; only SetupRuntimePath writes it into the configuration
// (SetupRuntimeType relies on containerd's PATH). The runc options table of
// SetupRuntimePath sets SystemdCgroup = false, as the test machine has no
// systemd; with kubelet's systemd cgroup driver it must be true.
func HandlerConfig(v ConfigVersion, s Setup, name, shimPath string) string {
	t := criRuntimePlugin(v) + ".containerd.runtimes." + name
	switch s {
	case SetupRuntimePath:
		return fmt.Sprintf(`[%s]
  runtime_type = %s
  runtime_path = %s
  [%s.options]
    SystemdCgroup = false
`, t, tomlString(v, "io.containerd.runc.v2"), tomlString(v, shimPath), t)
	default:
		return fmt.Sprintf(`[%s]
  runtime_type = %s
`, t, tomlString(v, "io.containerd.runc.v2-robust"))
	}
}

// UpstreamHandlerConfig renders the handler served by upstream's runc shim
// (containerd-shim-runc-v2, found on containerd's PATH), the same on every
// containerd of configuration version v.
func UpstreamHandlerConfig(v ConfigVersion, name string) string {
	t := criRuntimePlugin(v) + ".containerd.runtimes." + name
	return fmt.Sprintf(`[%s]
  runtime_type = %s
  [%s.options]
    SystemdCgroup = false
`, t, tomlString(v, "io.containerd.runc.v2"), t)
}

// RuntimeClassManifest is the Kubernetes RuntimeClass that sends pods to
// handler.
func RuntimeClassManifest(handler string) string {
	return fmt.Sprintf(`apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: %s
handler: %s
`, handler, handler)
}

// Snapshotter is the snapshotter the CRI plugin uses and the image is
// unpacked into.
const Snapshotter = "overlayfs"

// daemonConfig renders the whole private configuration in the daemon's
// configuration version: paths (harness's base configuration), the CRI
// plugin as the issue found it runs on these machines (restricted OOM score
// adjustment, empty CNI directories: every pod uses the host's network, so
// no CNI plugin is ever called), and the two handlers side by side.
func (d *Daemon) daemonConfig() string {
	v := d.ConfigVersion
	base := harness.BaseConfig(d.Root, d.State, d.Address, d.TTRPCAddress)
	q := func(s string) string { return tomlString(v, s) }
	var cri string
	if v >= ConfigV3 {
		// harness renders version 2; its top-level keys ([grpc], [ttrpc],
		// [debug], root, state, disabled_plugins) are the same in 3.
		base = "version = 3\n" + strings.TrimPrefix(base, "version = 2\n")
		rt, img := criRuntimePlugin(v), criImagesPlugin(v)
		cri = fmt.Sprintf(`
[%[1]s]
  snapshotter = %[3]s
  [%[1]s.pinned_images]
    sandbox = %[4]s

[%[2]s]
  restrict_oom_score_adj = true
  [%[2]s.cni]
    bin_dirs = [%[5]s]
    conf_dir = %[6]s
  [%[2]s.containerd]
    default_runtime_name = %[7]s
`, img, rt, q(Snapshotter), q(d.cfg.SandboxImage), q(d.CNIBinDir), q(d.CNIConfDir), q(HandlerRunc))
	} else {
		p := criRuntimePlugin(v)
		cri = fmt.Sprintf(`
[%[1]s]
  sandbox_image = %[2]s
  restrict_oom_score_adj = true
  [%[1]s.cni]
    bin_dir = %[3]s
    conf_dir = %[4]s
  [%[1]s.containerd]
    snapshotter = %[5]s
    default_runtime_name = %[6]s
`, p, q(d.cfg.SandboxImage), q(d.CNIBinDir), q(d.CNIConfDir), q(Snapshotter), q(HandlerRunc))
	}
	return base + cri + "\n" + UpstreamHandlerConfig(v, HandlerRunc) + "\n" +
		HandlerConfig(v, d.Setup, HandlerRobust, d.ShimPath(ShimRobustBinary))
}

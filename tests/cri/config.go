package cri

import (
	"fmt"
	"regexp"
	"strconv"

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

const criRuntimes = `plugins."io.containerd.grpc.v1.cri".containerd.runtimes`

// HandlerConfig renders the containerd configuration (config version 2)
// of runtime handler name served by our shim with set-up s. shimPath is the
// shim binary; only SetupRuntimePath writes it into the configuration
// (SetupRuntimeType relies on containerd's PATH). The runc options table of
// SetupRuntimePath sets SystemdCgroup = false, as the test machine has no
// systemd; with kubelet's systemd cgroup driver it must be true.
func HandlerConfig(s Setup, name, shimPath string) string {
	t := criRuntimes + "." + name
	switch s {
	case SetupRuntimePath:
		return fmt.Sprintf(`[%s]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = %q
  [%s.options]
    SystemdCgroup = false
`, t, shimPath, t)
	default:
		return fmt.Sprintf(`[%s]
  runtime_type = "io.containerd.runc.v2-robust"
`, t)
	}
}

// UpstreamHandlerConfig renders the handler served by upstream's runc shim
// (containerd-shim-runc-v2, found on containerd's PATH), the same on every
// containerd.
func UpstreamHandlerConfig(name string) string {
	t := criRuntimes + "." + name
	return fmt.Sprintf(`[%s]
  runtime_type = "io.containerd.runc.v2"
  [%s.options]
    SystemdCgroup = false
`, t, t)
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

// daemonConfig renders the whole private configuration: paths (harness's
// base configuration), the CRI plugin as the issue found it runs on these
// machines (restricted OOM score adjustment, empty CNI directories), and the
// two handlers side by side.
func (d *Daemon) daemonConfig() string {
	return harness.BaseConfig(d.Root, d.State, d.Address, d.TTRPCAddress) + fmt.Sprintf(`
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = %q

%s
%s`, d.cfg.SandboxImage, d.CNIBinDir, d.CNIConfDir, Snapshotter, HandlerRunc,
		UpstreamHandlerConfig(HandlerRunc),
		HandlerConfig(d.Setup, HandlerRobust, d.ShimPath(ShimRobustBinary)))
}

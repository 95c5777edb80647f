package systemd

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// env is what every test of the suite shares.
var env struct {
	repo     string
	ours     string // our shim
	oursIn   string // a copy of it in the shared directory, for commands run inside
	busybox  string
	sd       *harness.Systemd
	daemons  []daemonSpec
	startErr error
}

// daemonSpec is one containerd and the upstream shim that came with it.
type daemonSpec struct {
	name       string // "1.6", "2.4"
	containerd string
	upstream   string
}

func TestMain(m *testing.M) {
	code := 1
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: tests/systemd cannot run: %v\n", err)
	} else {
		code = m.Run()
	}
	if env.sd != nil {
		if err := env.sd.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "close private systemd: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func setup() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the suite needs root (namespaces, cgroups, systemd, containerd)")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	env.repo = repo
	env.ours = harness.EnvOr("E2E_SHIM", filepath.Join(repo, "bin/containerd-shim-runc-v2-robust"))
	env.daemons = []daemonSpec{
		{name: "1.6", containerd: harness.EnvOr("SYSTEMD_CONTAINERD16", "/usr/bin/containerd"),
			upstream: harness.EnvOr("SYSTEMD_UPSTREAM16", "/usr/bin/containerd-shim-runc-v2")},
		{name: "2.4", containerd: harness.EnvOr("SYSTEMD_CONTAINERD24", filepath.Join(repo, "bin/containerd-2.4/containerd")),
			upstream: harness.EnvOr("SYSTEMD_UPSTREAM24", filepath.Join(repo, "bin/containerd-2.4/containerd-shim-runc-v2"))},
	}
	bins := []harness.Binary{{What: "our shim", Path: env.ours, Hint: "make build"}}
	for _, d := range env.daemons {
		bins = append(bins,
			harness.Binary{What: "containerd " + d.name, Path: d.containerd, Hint: "Debian's containerd (make deps) / tests/daemons/build.sh"},
			harness.Binary{What: "upstream shim of containerd " + d.name, Path: d.upstream, Hint: "Debian's containerd (make deps) / tests/daemons/build.sh"})
	}
	if err := harness.CheckBinaries(bins...); err != nil {
		return err
	}
	if err := harness.CheckTools("install runc, util-linux, systemd (tests/systemd/deps.sh)", "runc", "unshare", "nsenter", "systemd-run", "systemctl"); err != nil {
		return err
	}
	if env.busybox, err = harness.FindBusybox(os.Getenv("E2E_BUSYBOX"), "install busybox-static, or set E2E_BUSYBOX", "install busybox-static"); err != nil {
		return err
	}
	if env.sd, err = harness.StartSystemd("robust-systemd-e2e"); err != nil {
		return err
	}
	env.oursIn = filepath.Join(env.sd.Dir, "containerd-shim-runc-v2-robust")
	return harness.CopyFile(env.ours, env.oursIn, 0o755)
}

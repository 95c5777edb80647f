package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/install"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// RunInstall runs `install` (uninstall false) or `uninstall` with args
// (after the word) and returns the exit status: 0 done (or nothing to do),
// 1 failed (install: rolled back, the message says so), 2 usage or a
// configuration refused (nothing changed).
func RunInstall(ctx context.Context, args []string, uninstall bool, stdout, stderr io.Writer) int {
	name := "install"
	if uninstall {
		name = "uninstall"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := install.Options{Stdout: stdout}
	var mode, restart string
	fs.StringVar(&mode, "mode", string(install.ModeRuntimeClass), "runtime-class: a CRI runtime --handler served by this binary; default: containerd's default CRI runtime (runc) served by it")
	fs.StringVar(&o.Handler, "handler", install.DefaultHandler, "the CRI runtime (RuntimeClass handler) of --mode runtime-class")
	fs.BoolVar(&o.ReplaceShimBinary, "replace-shim-binary", false, "with --mode default: also serve non-CRI clients (ctr, nerdctl, Docker): dpkg-divert upstream's binary (--upstream-shim) to "+delegate.DivertedName+" and put this binary (--shim-path) in its place; Debian-family hosts only; undone by uninstall")
	fs.StringVar(&o.UpstreamShim, "upstream-shim", install.DefaultUpstreamShim, "upstream's binary as containerd's package installed it (see dpkg -S "+delegate.BinaryName+"), the host's path; for --replace-shim-binary")
	fs.StringVar(&o.Config, "config", ops.DefaultContainerdConfig, "containerd's main configuration file (the host's path)")
	fs.StringVar(&o.HostRoot, "host-root", "/", "where the host's root is mounted (a DaemonSet's hostPath)")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the files it would write; change nothing")
	fs.BoolVar(&o.NoRestart, "no-restart", false, "write the files but do not restart containerd")
	fs.BoolVar(&o.NoContainerCheck, "no-container-check", false, "after the restart, do not check that a container starts with --shim-path (containerd's ctr run in namespace "+install.CheckNamespace+")")
	fs.StringVar(&o.ShimPath, "shim-path", install.DefaultShimPath, "this binary as the host names it (written as runtime_path)")
	fs.StringVar(&o.Containerd, "containerd", "containerd", "containerd's binary on the host (for --version and config dump)")
	fs.StringVar(&o.Address, "address", install.DefaultAddress, "containerd's socket (the host's path), checked after the restart")
	fs.StringVar(&restart, "restart-command", "", "command that restarts containerd (default: systemctl restart containerd, through nsenter -t 1 -m with --host-root)")
	fs.StringVar(&o.StateDir, "state-dir", install.DefaultStateDir, "where install keeps what it wrote (the host's path)")
	fs.DurationVar(&o.Timeout, "timeout", install.DefaultTimeout, "how long each command and the wait for containerd may take")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return ExitUsage
	}
	o.Mode = install.Mode(mode)
	if o.Mode != install.ModeRuntimeClass && o.Mode != install.ModeDefault {
		fmt.Fprintf(stderr, "%s: --mode %q: runtime-class or default\n", name, mode)
		return ExitUsage
	}
	o.RestartCommand = strings.Fields(restart)
	var err error
	if uninstall {
		_, err = install.Uninstall(ctx, o)
	} else {
		_, err = install.Install(ctx, o)
	}
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, install.ErrConfig), errors.Is(err, install.ErrReplaceShimBinary):
		fmt.Fprintf(stderr, "%s: %s: %v (nothing changed)\n", Name, name, err)
		return ExitUsage
	}
	fmt.Fprintf(stderr, "%s: %s: %v\n", Name, name, err)
	return ExitFailed
}

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

func main() {
	containerd := flag.String("containerd", "/usr/bin/containerd", "containerd binary")
	ours := flag.String("shim", "bin/containerd-shim-runc-v2-robust", "our shim")
	upstream := flag.String("upstream", "/usr/bin/containerd-shim-runc-v2", "upstream's shim ('' to show ours only)")
	busybox := flag.String("busybox", "/usr/bin/busybox", "static busybox for the rootfs")
	flag.Parse()
	if err := run(*containerd, *ours, *upstream, *busybox); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(containerd, ours, upstream, busybox string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (containerd, runc, cgroups, mounts)")
	}
	// Reap orphans at once, as a host's init does (some machines' PID 1
	// reaps only every couple of seconds, which holds up every delete).
	stop, err := harness.StartReaper()
	if err != nil {
		return err
	}
	defer stop()
	shims := map[string]string{harness.RuntimeRobust: abs(ours)}
	order := []string{}
	if upstream != "" {
		shims[harness.RuntimeUpstream] = abs(upstream)
		order = append(order, harness.RuntimeUpstream)
	}
	order = append(order, harness.RuntimeRobust)

	d, err := harness.NewDaemon(harness.DaemonConfig{Binary: containerd, Shims: shims})
	if err != nil {
		return err
	}
	defer d.Close()
	ctx := context.Background()
	if err := d.Start(ctx); err != nil {
		return err
	}
	say("started a private containerd %s (state %s)", d.Version, d.State)

	ns := fmt.Sprintf("demo-%d", os.Getpid())
	defer harness.RemoveNamespaceCgroups(ns)
	defer os.Remove(filepath.Join(harness.DefaultRuncRoot, ns)) // runc leaves its namespace directory
	for _, runtime := range order {
		if err := demo(ctx, d, ns, runtime, busybox); err != nil {
			return err
		}
	}
	return nil
}

func demo(ctx context.Context, d *harness.Daemon, ns, runtime, busybox string) error {
	who := "upstream's shim"
	if runtime == harness.RuntimeRobust {
		who = "our shim"
	}
	fmt.Printf("\n=== %s (%s)\n", who, runtime)
	id := "demo-" + strings.ReplaceAll(strings.TrimPrefix(runtime, "io.containerd."), ".", "-")
	c, err := d.Run(ctx, harness.ContainerConfig{Namespace: ns, ID: id, Runtime: runtime, Busybox: busybox})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Cleanup(cctx); err != nil {
			fmt.Fprintf(os.Stderr, "demo: cleaning up after %s: %v\n", id, err)
		}
	}()
	say("container %s runs: %d processes, %d cgroup directories, bundle %s", id, len(c.Procs), len(c.Cgroups), c.Bundle)

	src, err := c.BindHostDir("rootfs/mnt/host")
	if err != nil {
		return err
	}
	if err := c.RemoveFile("runtime"); err != nil {
		return err
	}
	say("broke it: removed the bundle's runtime file, bind-mounted %s (user data) into its rootfs", src)

	_, off := d.LogSince(0)
	if err := c.KillShim(); err != nil {
		return err
	}
	say("killed its shim (pid %d); containerd now runs `%s ... delete`", c.Shim.Pid, harness.ShimBinaryName(runtime))

	left := c.WaitClean(ctx, 15*time.Second, true)
	// containerd logs the delete's report (its stderr) once the command is
	// done: give it a moment to show up.
	var logs string
	harness.Poll(2*time.Second, 20*time.Millisecond, func() bool {
		logs, _ = d.LogSince(off)
		return strings.Contains(logs, "cleanup") || strings.Contains(logs, "clean up")
	})
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "cleanup") || strings.Contains(line, "clean up") || strings.Contains(line, "robust delete") {
			say("containerd log: %s", strings.TrimSpace(line))
		}
	}
	if len(left) == 0 {
		say("RESULT: nothing left — task directory, work directory, runc state, processes, cgroups, mounts, socket all gone; bind-mounted data intact")
	} else {
		say("RESULT: left behind (%s):\n%s", left.Summary(), left)
	}
	return nil
}

func say(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

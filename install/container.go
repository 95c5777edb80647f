package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// CheckNamespace is the containerd namespace of install's container check;
// it is removed afterwards.
const CheckNamespace = "robust-install-check"

// ContainerCheckTimeout bounds the container check (ctr run and its
// clean-up).
const ContainerCheckTimeout = 30 * time.Second

// checkBinary is the container's only file: a copy of ShimPath, run as
// `/robust-check -h` (exits 0).
const checkBinary = "robust-check"

// ErrNoCtr is the container check's refusal when containerd's ctr is not
// on the host.
var ErrNoCtr = errors.New("ctr not found")

// CtrRunArgs is the argv (after ctr) that runs the check container: a
// throwaway container id in CheckNamespace, rootfs the directory rootfs
// (not managed by a snapshotter, so nothing to pull or remove), served by
// the shim binary at the absolute path shim (`--runtime <path>`, which
// containerd 1.6, 1.7 and 2.x resolve to that very binary), no cgroup path
// (runc's own, removed with the container), removed when it exits.
func CtrRunArgs(address, shim, rootfs, id string) []string {
	return []string{"--address", address, "--namespace", CheckNamespace,
		"run", "--rm", "--rootfs", "--runtime", shim, "--cgroup", "",
		rootfs, id, "/" + checkBinary, "-h"}
}

// findCtr returns containerd's ctr as the host names it: beside
// Containerd when that is a path, else the first on this process's PATH
// and the usual directories, looked up in the host's root.
func (o *Options) findCtr() (string, error) {
	var dirs []string
	if filepath.IsAbs(o.Containerd) {
		dirs = append(dirs, filepath.Dir(o.Containerd))
	}
	dirs = append(dirs, filepath.SplitList(os.Getenv("PATH"))...)
	dirs = append(dirs, "/usr/local/bin", "/usr/bin", "/bin")
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, "ctr")
		if fi, err := os.Stat(o.host(p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w beside %s nor on PATH: the container check runs a container with containerd's ctr (install containerd's ctr, or skip the check with --no-container-check)", ErrNoCtr, o.Containerd)
}

// containerStarts runs a throwaway container with ShimPath as its shim
// (see CtrRunArgs) and checks that it exits 0; whatever happens, the
// container, its task and CheckNamespace are removed. Bounded by
// ContainerCheckTimeout (or Timeout when shorter).
func (o *Options) containerStarts(ctx context.Context) error {
	ctr, err := o.findCtr()
	if err != nil {
		return err
	}
	bound := ContainerCheckTimeout
	if o.Timeout < bound {
		bound = o.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	rootfs, err := os.MkdirTemp(o.host(o.StateDir), "check-rootfs-")
	if err != nil {
		return fmt.Errorf("container check: %w", err)
	}
	defer os.RemoveAll(rootfs)
	if err := linkOrCopy(o.host(o.ShimPath), filepath.Join(rootfs, checkBinary)); err != nil {
		return fmt.Errorf("container check: %w", err)
	}
	hostRootfs := filepath.Join(o.StateDir, filepath.Base(rootfs))
	id := "check-" + strconv.Itoa(os.Getpid())
	ctrArgs := func(args ...string) []string {
		return o.onHost(append([]string{ctr}, args...)...)
	}
	defer func() {
		// Best-effort, each step on its own: "not found" is success.
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		base := []string{"--address", o.Address, "--namespace", CheckNamespace}
		_, _ = o.run(cctx, ctrArgs(append(base, "tasks", "kill", "-s", "SIGKILL", id)...)...)
		_, _ = o.run(cctx, ctrArgs(append(base, "tasks", "delete", "-f", id)...)...)
		_, _ = o.run(cctx, ctrArgs(append(base, "containers", "delete", id)...)...)
		_, _ = o.run(cctx, ctrArgs("--address", o.Address, "namespaces", "remove", CheckNamespace)...)
	}()
	if _, err := o.run(ctx, ctrArgs(CtrRunArgs(o.Address, o.ShimPath, hostRootfs, id)...)...); err != nil {
		return fmt.Errorf("no container starts with %s: %w", o.ShimPath, err)
	}
	fmt.Fprintf(o.Stdout, "checked: a container ran with %s (%s run --runtime %s, namespace %s) and was removed\n", o.ShimPath, ctr, o.ShimPath, CheckNamespace)
	return nil
}

func linkOrCopy(from, to string) error {
	if err := os.Link(from, to); err == nil {
		return nil
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

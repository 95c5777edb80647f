package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Systemd is a private systemd: PID 1 of new pid, mount, cgroup, uts, ipc
// and network namespaces, on a pty of its own, with a fresh cgroup2 mount
// at /sys/fs/cgroup (a subtree of the host's unified hierarchy), a D-Bus
// system bus, a journald with volatile storage only (/run/log/journal on the
// namespace's /run tmpfs; a tmpfs over /var/log/journal besides, and no
// /dev/log socket: /dev is the host's), and everything that could touch the
// host masked: tmpfiles, sysctl, remount-fs, modules-load, udev, journal
// flush, audit and /dev/log sockets, random-seed, timesyncd, logind, getty,
// every timer, swap, fsck, the host's containerd; no generators, and empty
// /etc/systemd/system, /run, /tmp, /var/lib/systemd and /usr/local/bin of its
// own. What runs inside runs through Command (nsenter into every namespace
// of PID 1).
//
// Dir, under /var/tmp, is the one directory seen at the same path inside
// and outside: put there whatever both sides use (daemon directories,
// rootfs, binaries).
type Systemd struct {
	Dir       string    // shared directory; removed by Close
	Pid       int       // systemd's pid as the host sees it (PID 1 inside)
	CgroupDir string    // host path of the cgroup2 root systemd sees as /sys/fs/cgroup
	LogPath   string    // the console: systemd's and the init script's output
	Started   time.Time // when StartSystemd began

	name  string // cgroup name under the host's unified hierarchy
	cmd   *exec.Cmd
	done  chan struct{}
	ptmx  *os.File
	copyd chan struct{}
}

// SystemdTarget is the unit the private systemd starts: journald and D-Bus.
const SystemdTarget = "robust-test.target"

// systemdMasked are the units that could touch the host or slow start-up;
// they are masked in /run/systemd/system (the host's /etc/systemd/system is
// hidden behind an empty tmpfs).
var systemdMasked = []string{
	// sysinit.target.wants and what it pulls in
	"cryptsetup.target", "integritysetup.target", "veritysetup.target", "local-fs.target", "swap.target",
	"dev-hugepages.mount", "dev-mqueue.mount", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
	"sys-fs-fuse-connections.mount", "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
	"tmp.mount", "kmod-static-nodes.service", "systemd-ask-password-console.path", "systemd-ask-password-wall.path",
	"systemd-binfmt.service", "systemd-firstboot.service", "systemd-machine-id-commit.service",
	"systemd-modules-load.service", "systemd-pcrphase-sysinit.service", "systemd-pcrphase.service",
	"systemd-random-seed.service", "systemd-repart.service", "systemd-sysctl.service", "systemd-sysusers.service",
	"systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-setup-dev-early.service", "systemd-tmpfiles-setup.service",
	"systemd-tmpfiles-clean.service", "systemd-tmpfiles-clean.timer", "systemd-update-utmp.service",
	"systemd-update-utmp-runlevel.service", "systemd-remount-fs.service", "systemd-fsck-root.service",
	"systemd-fsck@.service", "systemd-hwdb-update.service", "ldconfig.service", "systemd-journal-catalog-update.service",
	// journald's parts that reach the host (dev-log links /dev/log, /dev
	// being the host's; flush writes /var/log/journal; audit reads the
	// host's audit stream), udev, logind, time, getty, timers. journald
	// itself and its main socket run: see systemdJournaldConf.
	"systemd-journald-dev-log.socket",
	"systemd-journald-audit.socket", "systemd-journal-flush.service", "systemd-udevd.service",
	"systemd-udevd-control.socket", "systemd-udevd-kernel.socket", "systemd-udev-trigger.service",
	"systemd-udev-settle.service", "systemd-logind.service", "systemd-user-sessions.service",
	"systemd-timesyncd.service", "systemd-initctl.socket", "systemd-pstore.service", "getty.target",
	"getty@.service", "serial-getty@.service", "console-getty.service", "getty-static.service", "timers.target",
	"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer",
	"man-db.timer", "e2scrub_reap.service", "remote-fs.target",
	// the host's daemons
	"containerd.service", "postgresql.service", "ssh.service", "cron.service",
}

// systemdJournaldConf keeps the private journald off the host: volatile
// storage (/run/log/journal, on the namespace's /run tmpfs), no kernel log
// (the host's), no audit, no wall messages. The init script writes it to
// /run/systemd/journald.conf.d/volatile.conf (the host's
// /etc/systemd/journald.conf.d is hidden behind an empty tmpfs).
const systemdJournaldConf = `[Journal]
Storage=volatile
ReadKMsg=no
Audit=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
`

// systemdInit is PID 1's script before it execs systemd. $1: the shared
// directory; $2: the pty's slave.
const systemdInit = `#!/bin/sh
set -eu
D="$1"; PTS="$2"
echo ready > "$D/ready"
while [ ! -e "$D/go" ]; do sleep 0.02; done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/systemd/system /run/systemd/journald.conf.d
cat > /run/systemd/journald.conf.d/volatile.conf <<'EOF'
` + systemdJournaldConf + `EOF
# journald writes only /run/log/journal (Storage=volatile); a tmpfs over
# the host's /var/log/journal besides, so that nothing inside can write it.
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=2755 tmpfs /var/log/journal; fi
if [ -d /etc/systemd/journald.conf.d ]; then mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/journald.conf.d; fi
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /var/lib/systemd && mount -t tmpfs -o mode=0755 tmpfs /var/lib/systemd
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
mount -t tmpfs -o mode=0755 tmpfs /usr/local/bin
for g in /lib/systemd/system-generators /usr/lib/systemd/system-generators /etc/systemd/system-generators /run/systemd/system-generators; do
	[ -d "$g" ] && mount -t tmpfs -o mode=0755 tmpfs "$g"
done
mount --bind "$PTS" /dev/console
umount -R -l /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
cp -a "$D/units/." /run/systemd/system/
echo "init: starting systemd"
# PID 1 dies with unshare, which dies with the test (Pdeathsig): a killed
# test leaves no systemd behind.
exec setpriv --pdeathsig KILL env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	/lib/systemd/systemd --system --unit=` + SystemdTarget + ` --log-target=console --show-status=no
`

// unifiedRoot is the host's cgroup2 mount: on a hybrid host
// /sys/fs/cgroup/unified, on a pure v2 host /sys/fs/cgroup.
func unifiedRoot() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup")
}

// SystemdReadyTimeout bounds StartSystemd's wait for systemd and D-Bus.
const SystemdReadyTimeout = 30 * time.Second

// StartSystemd starts a private systemd (see Systemd) and waits until it
// has reached SystemdTarget and its system bus answers. name names its
// cgroup under the host's unified hierarchy and its shared directory. On
// failure everything started is torn down and the error carries the tail
// of the console.
func StartSystemd(name string) (*Systemd, error) {
	for _, tool := range []string{"unshare", "nsenter", "setpriv", "systemctl", "busctl", "dbus-daemon"} {
		if _, err := FindTool(tool); err != nil {
			return nil, fmt.Errorf("%s not found (Debian packages systemd, dbus, util-linux: tests/systemd/deps.sh)", tool)
		}
	}
	if err := Executable("/lib/systemd/systemd"); err != nil {
		return nil, fmt.Errorf("systemd: %w (Debian package systemd: tests/systemd/deps.sh)", err)
	}
	uroot, err := unifiedRoot()
	if err != nil {
		return nil, err
	}
	sweepStaleSystemd(uroot, name)
	dir, err := os.MkdirTemp("/var/tmp", "robust-systemd-")
	if err != nil {
		return nil, err
	}
	cgName := name + "-" + filepath.Base(dir)
	s := &Systemd{
		Dir:       dir,
		CgroupDir: filepath.Join(uroot, cgName, "ns"),
		LogPath:   filepath.Join(dir, "console.log"),
		Started:   time.Now(),
		name:      cgName,
	}
	if err := s.start(uroot); err != nil {
		return nil, errors.Join(fmt.Errorf("private systemd: %w\n--- console (tail) ---\n%s", err, TailFile(s.LogPath, 30)), s.Close())
	}
	return s, nil
}

func (s *Systemd) start(uroot string) error {
	outer := filepath.Join(uroot, s.name, "outer")
	for _, p := range []string{s.CgroupDir, outer} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	if err := s.writeUnits(); err != nil {
		return err
	}
	initPath := filepath.Join(s.Dir, "init.sh")
	if err := os.WriteFile(initPath, []byte(systemdInit), 0o755); err != nil {
		return err
	}

	ptmx, pts, ptsName, err := openPty()
	if err != nil {
		return err
	}
	s.ptmx = ptmx
	logf, err := os.Create(s.LogPath)
	if err != nil {
		pts.Close()
		return err
	}
	s.copyd = make(chan struct{})
	go func() {
		defer close(s.copyd)
		defer logf.Close()
		_, _ = io.Copy(logf, ptmx) // ends with EIO when the last slave holder exits
	}()

	// The launcher joins <name>/ns, so that the new cgroup namespace is
	// rooted there; unshare itself is moved out to <name>/outer before
	// systemd starts (systemd cannot move processes it cannot see).
	cmd := exec.Command("/bin/sh", "-c",
		`echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount --mount-proc --cgroup --uts --ipc --net --propagation private /bin/sh "$2" "$3" "$4"`,
		"launcher", s.CgroupDir, initPath, s.Dir, ptsName)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Pdeathsig: syscall.SIGKILL}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := cmd.Start(); err != nil {
		pts.Close()
		return fmt.Errorf("start unshare: %w", err)
	}
	pts.Close()
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()

	if !Poll(10*time.Second, 10*time.Millisecond, func() bool { _, err := os.Stat(filepath.Join(s.Dir, "ready")); return err == nil }) {
		return errors.New("init script did not start within 10s")
	}
	// The init is unshare's only child: PID 1 inside.
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("find the init: %w", err)
	}
	f := strings.Fields(string(children))
	if len(f) != 1 {
		return fmt.Errorf("unshare %d has children %q, want one", cmd.Process.Pid, f)
	}
	if s.Pid, err = strconv.Atoi(f[0]); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outer, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return fmt.Errorf("move unshare out of the namespace's cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "go"), nil, 0o644); err != nil {
		return err
	}

	deadline := time.Now().Add(SystemdReadyTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("systemd exited during start-up")
		default:
		}
		out, err := s.Output(context.Background(), "systemctl", "is-active", SystemdTarget, "systemd-journald.service", "dbus.service")
		last = strings.TrimSpace(out)
		if err == nil {
			if _, err := s.Output(context.Background(), "busctl", "--system", "status", "org.freedesktop.systemd1"); err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("systemd did not reach %s with journald and D-Bus within %s (last: %q)", SystemdTarget, SystemdReadyTimeout, last)
}

// writeUnits puts the target, dbus drop-ins and masks in <Dir>/units,
// which the init script copies to /run/systemd/system.
func (s *Systemd) writeUnits() error {
	units := filepath.Join(s.Dir, "units")
	files := map[string]string{
		SystemdTarget: `[Unit]
Description=robust shim tests: journald, D-Bus and nothing else
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald.service dbus.socket dbus.service
After=systemd-journald.socket systemd-journald.service dbus.socket dbus.service
`,
		"dbus.socket.d/robust-test.conf": "[Unit]\nDefaultDependencies=no\n",
		"dbus.service.d/robust-test.conf": `[Unit]
DefaultDependencies=no
[Service]
ExecStart=
ExecStart=/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --nosyslog
`,
	}
	for name, content := range files {
		p := filepath.Join(units, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, u := range systemdMasked {
		if err := os.Symlink("/dev/null", filepath.Join(units, u)); err != nil {
			return err
		}
	}
	return nil
}

// openPty opens a new pty pair: the master, the slave and the slave's path.
func openPty() (ptmx, pts *os.File, name string, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, "", err
	}
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		return nil, nil, "", fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		return nil, nil, "", fmt.Errorf("ptsname: %w", err)
	}
	name = "/dev/pts/" + strconv.Itoa(n)
	pts, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, "", err
	}
	return ptmx, pts, name, nil
}

// Command is args run inside every namespace of the private systemd
// (nsenter -t PID -a), with a plain PATH.
func (s *Systemd) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(s.Pid), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	return cmd
}

// Output runs args inside (Command, bounded by 30 s) and returns stdout and
// stderr together; the error carries them.
func (s *Systemd) Output(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := s.Command(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// UnitState is a unit's LoadState and ActiveState as systemctl shows them
// ("not-found", "inactive" for a unit systemd does not know).
func (s *Systemd) UnitState(unit string) (load, active string, err error) {
	out, err := s.Output(context.Background(), "systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "--", unit)
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "LoadState":
			load = v
		case "ActiveState":
			active = v
		}
	}
	return load, active, nil
}

// HostCgroup is the host path of the cgroup systemd names p ("/a.slice/b.scope").
func (s *Systemd) HostCgroup(p string) string {
	return filepath.Join(s.CgroupDir, filepath.Clean("/"+p))
}

// Running reports whether the private systemd is still up.
func (s *Systemd) Running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Close kills the private systemd (SIGKILL to PID 1 takes every process of
// its pid namespace with it), waits for it, removes its cgroup subtree
// (deepest first) and the shared directory. Mounts of the namespace die
// with it.
func (s *Systemd) Close() error {
	var errs []error
	if s.cmd != nil && s.Pid > 0 {
		_ = unix.Kill(s.Pid, unix.SIGKILL)
	}
	if s.cmd != nil {
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if s.ptmx != nil {
		s.ptmx.Close()
	}
	if s.copyd != nil {
		select {
		case <-s.copyd:
		case <-time.After(2 * time.Second):
		}
	}
	if s.name != "" {
		if uroot, err := unifiedRoot(); err == nil {
			if err := removeCgroupTree(filepath.Join(uroot, s.name), 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.Dir != "" {
		if ms := MountsUnder([]int{0}, s.Dir); len(ms) > 0 {
			errs = append(errs, fmt.Errorf("mounts left under %s: %v; directory kept", s.Dir, ms))
		} else if err := os.RemoveAll(s.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes dir and every cgroup below it, deepest first,
// retrying while the processes of a killed namespace drain (bounded).
func removeCgroupTree(dir string, timeout time.Duration) error {
	var last error
	ok := Poll(timeout, 50*time.Millisecond, func() bool {
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		last = nil
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				last = fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
			}
		}
		return last == nil
	})
	if !ok && last != nil {
		return last
	}
	return nil
}

// sweepStaleSystemd removes what a killed run of a private systemd called
// name left: its cgroup subtree, when no process is left in it (a
// populated cgroup refuses rmdir), and then its shared directory, when no
// mount is left under it.
func sweepStaleSystemd(uroot, name string) {
	ents, err := os.ReadDir(uroot)
	if err != nil {
		return
	}
	for _, e := range ents {
		base, ok := strings.CutPrefix(e.Name(), name+"-")
		if !ok || !e.IsDir() || !strings.HasPrefix(base, "robust-systemd-") {
			continue
		}
		if removeCgroupTree(filepath.Join(uroot, e.Name()), 0) != nil {
			continue
		}
		dir := filepath.Join("/var/tmp", base)
		if len(MountsUnder([]int{0}, dir)) == 0 {
			_ = os.RemoveAll(dir)
		}
	}
}

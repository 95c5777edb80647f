package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BootTimeout bounds QEMU's start to the suite's first line. Measured under
// emulation on a busy 2-core host: 21–41 s; a boot that has not reached the
// suite after this is hung.
const BootTimeout = 4 * time.Minute

// BootConfig is one boot of the node.
type BootConfig struct {
	Image *Image
	Share *Share
	CPUs  int // default 2
	MemMB int // default 4096
	// Console gets the serial console line by line as it comes (the
	// suite's output among the boot messages); nil: not streamed.
	Console io.Writer
	// BootTimeout overrides BootTimeout when set.
	BootTimeout time.Duration
}

// Result is what one boot did.
type Result struct {
	Accel       string        // "kvm" or "tcg"
	BootToSuite time.Duration // QEMU's start to the suite's first line
	Total       time.Duration // QEMU's start to its exit
	Status      int           // the suite's exit status (out/status)
	Steps       map[string]StepResult
	Facts       map[string]string
}

// Accel is "kvm" when /dev/kvm can be opened read-write, else "tcg".
func Accel() string {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		return "kvm"
	}
	return "tcg"
}

// qemuArgs is the command line of one boot: the image's kernel on the
// unified cgroup v2 hierarchy, its disk in snapshot mode (the image never
// changes), the share over 9p, no network card, the serial console on
// stdout, and no reboot: a kernel panic or a power-off ends QEMU.
func qemuArgs(cfg BootConfig, accel string) []string {
	args := []string{"-nodefaults", "-no-user-config"}
	if accel == "kvm" {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	return append(args,
		"-smp", strconv.Itoa(cfg.CPUs), "-m", strconv.Itoa(cfg.MemMB),
		"-kernel", cfg.Image.Kernel, "-initrd", cfg.Image.Initrd,
		"-append", "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=1 loglevel=4 systemd.show_status=error",
		"-drive", "file="+cfg.Image.Disk+",if=virtio,format=raw,snapshot=on",
		"-virtfs", "local,path="+cfg.Share.Dir+",mount_tag=share,security_model=none",
		"-nic", "none", "-no-reboot",
		"-serial", "stdio", "-vga", "none", "-display", "none", "-monitor", "none",
	)
}

// Boot boots the node, which runs su as robust-suite.service and powers
// off. It fails when QEMU cannot start, when the boot does not reach the
// suite within the boot timeout (hung boot), when the whole boot exceeds
// su.Timeout, and when the unit left no status. A suite that ran and
// failed is not an error: Result.Status and Result.Steps say what failed.
// The serial console is kept in out/serial.log.
func Boot(ctx context.Context, cfg BootConfig, su Suite) (*Result, error) {
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.MemMB == 0 {
		cfg.MemMB = 4096
	}
	bootTimeout := cfg.BootTimeout
	if bootTimeout == 0 {
		bootTimeout = BootTimeout
	}
	if su.Timeout == 0 {
		su.Timeout = 60 * time.Minute
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not found (run tests/node/deps.sh): %w", err)
	}
	if err := os.WriteFile(cfgScript(cfg), []byte(su.script()), 0o755); err != nil {
		return nil, err
	}
	for _, p := range []string{cfg.Share.Out("status"), cfg.Share.Out("console.log")} {
		_ = os.Remove(p)
	}
	serial, err := os.Create(cfg.Share.Out("serial.log"))
	if err != nil {
		return nil, err
	}
	defer serial.Close()

	res := &Result{Accel: Accel(), Status: -1}
	cmd := exec.Command(qemu, qemuArgs(cfg, res.Accel)...)
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}

	reached := make(chan struct{})
	var tail tailBuf
	var readDone sync.WaitGroup
	readDone.Add(1)
	go func() {
		defer readDone.Done()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		once := sync.Once{}
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(serial, line)
			tail.add(line)
			if cfg.Console != nil {
				fmt.Fprintf(cfg.Console, "node| %s\n", line)
			}
			if strings.Contains(line, suiteMarker) {
				once.Do(func() { res.BootToSuite = time.Since(start); close(reached) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { readDone.Wait(); exited <- cmd.Wait() }()

	kill := func(why string) error {
		_ = cmd.Process.Kill()
		<-exited
		res.Total = time.Since(start)
		return fmt.Errorf("node %s: %s; QEMU killed after %s; last console lines:\n%s", su.Name, why, res.Total.Round(time.Second), tail.String())
	}
	bootTimer := time.NewTimer(bootTimeout)
	defer bootTimer.Stop()
	allTimer := time.NewTimer(su.Timeout)
	defer allTimer.Stop()
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-reached:
			reached = nil
			bootTimer.Stop()
		case <-bootTimer.C:
			return res, kill(fmt.Sprintf("hung boot: the suite did not start within %s", bootTimeout))
		case <-allTimer.C:
			return res, kill(fmt.Sprintf("timeout: the suite did not finish within %s", su.Timeout))
		case <-ctx.Done():
			return res, kill(ctx.Err().Error())
		}
	}
	res.Total = time.Since(start)
	res.Steps = cfg.Share.readSteps(su)
	res.Facts = cfg.Share.ReadFacts()
	if waitErr != nil {
		return res, fmt.Errorf("node %s: qemu: %v; last console lines:\n%s", su.Name, waitErr, tail.String())
	}
	if reached != nil {
		return res, fmt.Errorf("node %s: the node powered off before the suite started; last console lines:\n%s", su.Name, tail.String())
	}
	data, err := os.ReadFile(cfg.Share.Out("status"))
	if err != nil {
		return res, fmt.Errorf("node %s: the unit left no status (it failed before its script ended): %w; last console lines:\n%s", su.Name, err, tail.String())
	}
	if res.Status, err = strconv.Atoi(strings.TrimSpace(string(data))); err != nil {
		return res, fmt.Errorf("node %s: status %q: %w", su.Name, data, err)
	}
	return res, nil
}

func cfgScript(cfg BootConfig) string { return cfg.Share.Dir + "/suite.sh" }

// tailBuf keeps the last lines of the console for error messages.
type tailBuf struct {
	mu    sync.Mutex
	lines []string
}

const tailLines = 40

func (t *tailBuf) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > tailLines {
		t.lines = t.lines[len(t.lines)-tailLines:]
	}
}

func (t *tailBuf) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

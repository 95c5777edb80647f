package cri

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// TestInstall is `install` and `uninstall` end to end (issue 20) on every
// supported line: a private containerd whose main file is that line's own
// `containerd config default` with the machine's paths replaced by private
// ones (root, state, sockets, CNI, NRI, opt, the conf.d import of 2.3/2.4),
// restarted by install through a --restart-command script that really
// stops and starts that containerd. For each mode (runtime-class, default):
// install exits 0 → containerd serves again → a pod through CRI (handler
// `robust`, or the default runtime) was started through our binary (the
// sandbox's shim-binary-path) and is served by the delegate our binary
// execs (/proc/<shim>/exe) → `-v` names the delegate → uninstall exits 0 →
// the main file byte-identical and nothing of ours left. Then a restart
// that starts a broken containerd (it exits on a configuration it cannot
// parse): install exits non-zero saying it rolled back, the files are
// byte-identical and containerd serves again. A main file that is not
// TOML: install refuses (non-zero), changes nothing, restarts nothing.
// Fails, never skips.
func TestInstall(t *testing.T) {
	start := time.Now()
	seen := map[string]bool{}
	for _, du := range daemons {
		if seen[du.line] {
			continue // one run per line: install picks its own set-up
		}
		seen[du.line] = true
		t.Run(du.line, func(t *testing.T) { installLine(t, du) })
	}
	if len(seen) != len(lines) {
		t.Fatalf("ran on %d lines, want %d", len(seen), len(lines))
	}
	t.Logf("install figures: %d lines in %s", len(seen), time.Since(start).Round(time.Second))
}

// privateDefault turns `containerd config default` into a private daemon's
// configuration: the same text, only the machine's paths and the sandbox
// image replaced, restrict_oom_score_adj as this machine needs it, and
// the plugins that reach off the private directories disabled.
func privateDefault(def string, d *Daemon) (string, error) {
	confd := filepath.Join(d.Dir, "conf.d")
	repl := []struct{ from, to string }{
		{"/run/containerd/containerd.sock.ttrpc", d.TTRPCAddress},
		{"/run/containerd/containerd.sock", d.Address},
		{"/var/lib/containerd", d.Root},
		{"/run/containerd", d.State},
		{"/opt/cni/bin", d.CNIBinDir},
		{"/etc/cni/net.d", d.CNIConfDir},
		{"/var/run/nri/nri.sock", filepath.Join(d.Dir, "nri.sock")},
		{"/opt/containerd", filepath.Join(d.Dir, "opt")},
		{"/etc/containerd/conf.d/*.toml", confd + "/*.toml"},
	}
	out := def
	for _, r := range repl {
		for _, q := range []string{`"`, `'`} {
			out = strings.ReplaceAll(out, q+r.from+q, q+r.to+q)
		}
	}
	out = regexp.MustCompile(`(?m)^(\s*restrict_oom_score_adj = )false$`).ReplaceAllString(out, "${1}true")
	pause := regexp.MustCompile(`(['"])registry\.k8s\.io/pause:[0-9.]+(['"])`)
	if !pause.MatchString(out) {
		return "", fmt.Errorf("no sandbox image in the default")
	}
	out = pause.ReplaceAllString(out, "${1}"+ImageRef+"${2}")
	dis := regexp.MustCompile(`(?m)^disabled_plugins = \[\]$`)
	if !dis.MatchString(out) {
		return "", fmt.Errorf("no `disabled_plugins = []` in the default")
	}
	var q []string
	for _, p := range []string{"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
		"io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"} {
		q = append(q, `"`+p+`"`)
	}
	out = dis.ReplaceAllString(out, "disabled_plugins = ["+strings.Join(q, ", ")+"]")
	if strings.Contains(out, "'/run/containerd") || strings.Contains(out, "\"/run/containerd") ||
		strings.Contains(out, "/etc/containerd/conf.d") || strings.Contains(out, "'/var/lib/containerd") ||
		strings.Contains(out, "\"/var/lib/containerd") {
		return "", fmt.Errorf("a machine path is left in the private configuration:\n%s", out)
	}
	return out, nil
}

// restarter serves the --restart-command script: the script writes a
// request into a FIFO and waits for the answer in another; the test stops
// its containerd and starts it again (or a broken one, once, when armed).
type restarter struct {
	d            *Daemon
	req, resp    string
	script       string
	brokenConfig string

	mu       sync.Mutex
	broken   int // the next n restarts start a broken containerd
	restarts int
	stop     chan struct{}
	done     chan struct{}
}

func newRestarter(t *testing.T, d *Daemon) *restarter {
	r := &restarter{d: d, req: filepath.Join(d.Dir, "restart.req"), resp: filepath.Join(d.Dir, "restart.resp"),
		script: filepath.Join(d.Dir, "restart-containerd"), brokenConfig: filepath.Join(d.Dir, "broken.toml"),
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, f := range []string{r.req, r.resp} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf("#!/bin/sh\n# restarts the private containerd of %s (served by the test)\necho restart > %s\nread -r answer < %s\necho \"$answer\"\n[ \"$answer\" = ok ]\n",
		d.Dir, r.req, r.resp)
	if err := os.WriteFile(r.script, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.brokenConfig, []byte("version = 2\nthis is [ not toml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	go r.serve()
	t.Cleanup(func() {
		close(r.stop)
		// Unblock the open of the request FIFO.
		if f, err := os.OpenFile(r.req, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
		}
	})
	return r
}

func (r *restarter) serve() {
	defer close(r.done)
	for {
		f, err := os.Open(r.req)
		if err != nil {
			return
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		select {
		case <-r.stop:
			return
		default:
		}
		if strings.TrimSpace(line) != "restart" {
			continue
		}
		answer := r.restart()
		w, err := os.OpenFile(r.resp, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		fmt.Fprintln(w, answer)
		w.Close()
	}
}

func (r *restarter) restart() string {
	r.mu.Lock()
	r.restarts++
	broken := r.broken > 0
	if broken {
		r.broken--
	}
	r.mu.Unlock()
	if err := r.d.Stop(); err != nil {
		return "stop: " + oneLine(err)
	}
	if broken {
		// What a bad package or edit leaves: the unit's containerd starts
		// and exits on its configuration; systemctl restart returns 0.
		out, err := exec.Command(r.d.Binary(), "--config", r.brokenConfig).CombinedOutput()
		if err == nil {
			return "the broken containerd did not fail: " + string(out)
		}
		return "ok"
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout+10*time.Second)
	defer cancel()
	if err := r.d.Start(ctx); err != nil {
		return "start: " + oneLine(err)
	}
	return "ok"
}

func (r *restarter) count() int { r.mu.Lock(); defer r.mu.Unlock(); return r.restarts }

func (r *restarter) arm(n int) { r.mu.Lock(); r.broken = n; r.mu.Unlock() }

// noCheckNamespace fails when install's container check left its
// namespace (install.CheckNamespace) in d.
func noCheckNamespace(t *testing.T, d *Daemon) {
	t.Helper()
	out, err := exec.Command("ctr", "--address", d.Address, "namespaces", "ls", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr namespaces ls: %v: %s", err, out)
	}
	for _, ns := range strings.Fields(string(out)) {
		if ns == "robust-install-check" {
			t.Errorf("install's container check left its namespace %s", ns)
		}
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " | ") }

// snapshot is every file under dir (the main file and the conf.d directory
// live there) with its bytes, except the daemon's own state and logs.
func snapshotConfig(t *testing.T, d *Daemon, stateDir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	b, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	m[d.ConfigPath] = string(b)
	confd := filepath.Join(d.Dir, "conf.d")
	_ = filepath.WalkDir(confd, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() {
			m[p+"/"] = "dir"
			return nil
		}
		b, _ := os.ReadFile(p)
		m[p] = string(b)
		return nil
	})
	for _, p := range []string{filepath.Join(d.Dir, DropInNameForTest), stateDir} {
		if _, err := os.Stat(p); err == nil {
			m[p] = "present"
		}
	}
	return m
}

// DropInNameForTest is install's drop-in file name (install.DropInName; the
// tests module does not import install, so that a rename shows here).
const DropInNameForTest = "zz-containerd-shim-runc-v2-robust.toml"

func diffSnapshots(before, after map[string]string) []string {
	var d []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			d = append(d, k+": gone")
		} else if w != v {
			d = append(d, k+": changed")
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, k+": new")
		}
	}
	return d
}

func installLine(t *testing.T, du daemonUnderTest) {
	lineStart := time.Now()
	d, err := NewDaemon(DaemonConfig{
		Binary:       du.binary,
		Shims:        map[string]string{ShimRobustBinary: shimRobust, ShimUpstreamBinary: du.upstream},
		SandboxImage: ImageRef,
	})
	if err != nil {
		t.Fatalf("new daemon %s: %v", du.binary, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- containerd log (tail) ---\n%s", d.LogTail(60))
		}
		if err := d.Close(); err != nil {
			t.Errorf("close daemon: %v", err)
		}
	})
	def, err := exec.Command(du.binary, "config", "default").Output()
	if err != nil {
		t.Fatalf("%s config default: %v", du.binary, err)
	}
	cfg, err := privateDefault(string(def), d)
	if err != nil {
		t.Fatalf("containerd %s's config default: %v", d.Version, err)
	}
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, StartTimeout+10*time.Second)
	defer cancel()
	if err := d.Start(sctx); err != nil {
		t.Fatalf("start containerd %s on its own config default (%s): %v", d.Version, d.ConfigPath, err)
	}
	if err := d.ImportImage(sctx, imageArchive, ImageRef); err != nil {
		t.Fatalf("image: %v", err)
	}
	r := newRestarter(t, d)
	ours := d.ShimPath(ShimRobustBinary)
	delegateBin := d.ShimPath(ShimUpstreamBinary)
	stateDir := filepath.Join(d.Dir, "install-state")
	before := snapshotConfig(t, d, stateDir)

	run := func(t *testing.T, timeout time.Duration, args ...string) (string, error) {
		t.Helper()
		argv := append(args, "--config", d.ConfigPath, "--containerd", du.binary, "--shim-path", ours,
			"--address", d.Address, "--state-dir", stateDir, "--restart-command", r.script,
			"--timeout", timeout.String())
		cmd := exec.Command(ours, argv...)
		cmd.Env = append(os.Environ(), "PATH="+d.PathEnv())
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("$ %s %s (%s)\n%s", filepath.Base(ours), strings.Join(argv, " "), time.Since(t0).Round(time.Millisecond), out)
		return string(out), err
	}

	// podRuns runs a pod through CRI under handler ("" = the default
	// runtime) and checks that containerd started it through our binary and
	// that the delegate our binary execs serves it; then removes it.
	podRuns := func(t *testing.T, podName, handler string) {
		t.Helper()
		p := d.NewPod(PodConfig{Name: podName, Handler: handler, CgroupParent: cgroupRoot + "/pod-" + podName + "-" + du.line})
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer pcancel()
		podErr := p.Run(pctx)
		if podErr == nil {
			st, err := p.States(pctx)
			if err != nil || !st.Up() {
				podErr = fmt.Errorf("pod not up: %s (%v)", st, err)
			}
		}
		if podErr == nil {
			started, err := os.ReadFile(filepath.Join(p.Tasks[0].Bundle, bundle.ShimBinaryPathFile))
			if got := strings.TrimSpace(string(started)); err != nil || got != ours {
				podErr = fmt.Errorf("containerd started shim %q (%s: %v), want ours %s", got, bundle.ShimBinaryPathFile, err, ours)
			}
		}
		if podErr == nil {
			for _, exe := range p.ShimExes {
				if exe != delegateBin {
					podErr = fmt.Errorf("pod served by %s, want the delegate %s our binary execs", exe, delegateBin)
				}
			}
			if len(p.ShimExes) == 0 {
				podErr = fmt.Errorf("no shim recorded for the pod")
			}
		}
		if podErr == nil {
			if info, err := p.SandboxInfo(pctx); err == nil {
				t.Logf("pod %s: runtime handler %v, started %s, served by %v", podName, runtimeHandler(info), ours, p.ShimExes)
			}
		}
		if err := p.Cleanup(pctx); err != nil {
			t.Errorf("cleanup of pod %s: %v", podName, err)
		}
		if podErr != nil {
			t.Errorf("pod through CRI under handler %q: %v", handler, podErr)
		}
	}

	for _, mode := range []string{"runtime-class", "default"} {
		t.Run(mode, func(t *testing.T) {
			n0 := r.count()
			out, err := run(t, 90*time.Second, "install", "--mode", mode)
			if err != nil {
				t.Fatalf("install --mode %s: %v", mode, err)
			}
			// install's own container check ran (ctr run with our binary
			// as the shim) and passed.
			if want := "checked: a container ran with " + ours; !strings.Contains(out, want) {
				t.Errorf("install --mode %s does not say %q:\n%s", mode, want, out)
			}
			noCheckNamespace(t, d)
			if r.count() != n0+1 {
				t.Fatalf("install restarted containerd %d times, want 1", r.count()-n0)
			}
			if !d.Running() || d.Runtime() == nil {
				t.Fatalf("containerd is not serving after install")
			}
			after := snapshotConfig(t, d, stateDir)
			if len(diffSnapshots(before, after)) == 0 {
				t.Fatalf("install changed no file")
			}
			// Idempotent: nothing written, no restart.
			if out, err := run(t, 90*time.Second, "install", "--mode", mode); err != nil || !strings.Contains(out, "nothing changed") {
				t.Errorf("second install: %v: %s", err, out)
			}
			if r.count() != n0+1 {
				t.Errorf("a repeated install restarted containerd")
			}
			handler := HandlerRobust
			if mode == "default" {
				handler = "" // the default runtime, as a pod without a RuntimeClass
			}
			podRuns(t, "install-"+mode, handler)
			// -v names the delegate.
			vcmd := exec.Command(ours, "-v")
			vcmd.Env = append(os.Environ(), "PATH="+d.PathEnv())
			vout, err := vcmd.CombinedOutput()
			if err != nil || !strings.Contains(string(vout), "delegate: "+delegateBin) {
				t.Errorf("%s -v: %v: does not name the delegate %s:\n%s", ours, err, delegateBin, vout)
			}
			if _, err := run(t, 90*time.Second, "uninstall"); err != nil {
				t.Fatalf("uninstall: %v", err)
			}
			if r.count() != n0+2 {
				t.Errorf("uninstall restarted containerd %d times, want 1", r.count()-n0-1)
			}
			if diff := diffSnapshots(before, snapshotConfig(t, d, stateDir)); len(diff) > 0 {
				t.Fatalf("after uninstall: %v", diff)
			}
			if !d.Running() || d.Runtime() == nil {
				t.Fatalf("containerd is not serving after uninstall")
			}
			// containerd serves its default runtime again, without us.
			if _, err := d.Runtime().Status(ctx, &runtimeapi.StatusRequest{}); err != nil {
				t.Fatalf("CRI status after uninstall: %v", err)
			}
		})
	}

	if d.ConfigVersion >= ConfigV3 {
		// A node upgraded from 1.7 keeps its version 2 file: 1.7's own
		// config default (private paths) under this 2.x daemon.
		t.Run("version 2 main file", func(t *testing.T) {
			var v17 string
			for _, o := range daemons {
				if o.line == "1.7" {
					v17 = o.binary
				}
			}
			def17, err := exec.Command(v17, "config", "default").Output()
			if err != nil {
				t.Fatalf("%s config default: %v", v17, err)
			}
			cfg17, err := privateDefault(string(def17), d)
			if err != nil {
				t.Fatal(err)
			}
			orig, err := os.ReadFile(d.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := os.WriteFile(d.ConfigPath, orig, 0o644); err != nil {
					t.Error(err)
				}
				if a := r.restart(); a != "ok" {
					t.Errorf("restart on the line's own default: %s", a)
				}
			}()
			if err := os.WriteFile(d.ConfigPath, []byte(cfg17), 0o644); err != nil {
				t.Fatal(err)
			}
			if a := r.restart(); a != "ok" {
				t.Fatalf("containerd %s on 1.7's version 2 default: %s", d.Version, a)
			}
			before2 := snapshotConfig(t, d, stateDir)
			out, err := run(t, 90*time.Second, "install", "--mode", "runtime-class")
			if err != nil {
				t.Fatalf("install: %v", err)
			}
			if !strings.Contains(out, "configuration version 2") {
				t.Errorf("install did not write version 2: %s", out)
			}
			podRuns(t, "install-v2file", HandlerRobust)
			if _, err := run(t, 90*time.Second, "uninstall"); err != nil {
				t.Fatalf("uninstall: %v", err)
			}
			if diff := diffSnapshots(before2, snapshotConfig(t, d, stateDir)); len(diff) > 0 {
				t.Fatalf("after uninstall: %v", diff)
			}
		})
	}

	t.Run("broken configuration refused", func(t *testing.T) {
		orig, err := os.ReadFile(d.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		broken := append(append([]byte(nil), orig...), []byte("\n[plugins\nthis is not toml\n")...)
		if err := os.WriteFile(d.ConfigPath, broken, 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.WriteFile(d.ConfigPath, orig, 0o644); err != nil {
				t.Fatal(err)
			}
		}()
		n0 := r.count()
		out, err := run(t, 10*time.Second, "install", "--mode", "runtime-class")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("install on a broken main file: %v, want a non-zero exit: %s", err, out)
		}
		if !strings.Contains(out, "nothing changed") {
			t.Errorf("install's refusal does not say nothing changed: %s", out)
		}
		if r.count() != n0 {
			t.Errorf("install restarted containerd on a configuration it refused")
		}
		if b, _ := os.ReadFile(d.ConfigPath); string(b) != string(broken) {
			t.Errorf("install changed the broken main file")
		}
		after := snapshotConfig(t, d, stateDir)
		after[d.ConfigPath] = string(orig)
		if diff := diffSnapshots(before, after); len(diff) > 0 {
			t.Errorf("after a refused install: %v", diff)
		}
	})

	t.Run("containerd does not come back", func(t *testing.T) {
		n0 := r.count()
		r.arm(1)
		out, err := run(t, 10*time.Second, "install", "--mode", "runtime-class")
		if err == nil {
			t.Fatalf("install exited 0 with a containerd that did not come back")
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("install: %v", err)
		}
		if !strings.Contains(out, "rolled back") || strings.Contains(out, "roll-back FAILED") {
			t.Errorf("install's message does not say it rolled back: %s", out)
		}
		if r.count() != n0+2 {
			t.Errorf("containerd restarted %d times, want 2 (the broken start, the roll-back's)", r.count()-n0)
		}
		if diff := diffSnapshots(before, snapshotConfig(t, d, stateDir)); len(diff) > 0 {
			t.Fatalf("after the roll-back: %v", diff)
		}
		if !d.Running() || d.Runtime() == nil {
			t.Fatalf("containerd is not serving after the roll-back")
		}
		if _, err := d.Runtime().Status(ctx, &runtimeapi.StatusRequest{}); err != nil {
			t.Fatalf("CRI status after the roll-back: %v", err)
		}
	})

	// Our binary cannot start a container (the delegate it execs, this
	// daemon's private copy of upstream's shim, fails every command but
	// -v): containerd answers and config dump shows our runtime, only
	// install's container check can see it. install exits non-zero naming
	// that check and rolls back.
	t.Run("no container starts", func(t *testing.T) {
		real := delegateBin + ".real"
		if err := os.Rename(delegateBin, real); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.Rename(real, delegateBin); err != nil {
				t.Fatalf("putting the delegate back: %v", err)
			}
		}()
		script := fmt.Sprintf("#!/bin/sh\ncase \"$1\" in -v|--version) exec %s \"$@\";; esac\necho 'broken delegate (TestInstall)' >&2\nexit 1\n", real)
		if err := os.WriteFile(delegateBin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(delegateBin)
		n0 := r.count()
		out, err := run(t, 90*time.Second, "install", "--mode", "runtime-class")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("install with a shim that starts no container: %v, want a non-zero exit: %s", err, out)
		}
		if !strings.Contains(out, "no container starts with "+ours) {
			t.Errorf("install's message does not name the container check: %s", out)
		}
		if !strings.Contains(out, "rolled back") || strings.Contains(out, "roll-back FAILED") {
			t.Errorf("install's message does not say it rolled back: %s", out)
		}
		if r.count() != n0+2 {
			t.Errorf("containerd restarted %d times, want 2 (install's, the roll-back's)", r.count()-n0)
		}
		if diff := diffSnapshots(before, snapshotConfig(t, d, stateDir)); len(diff) > 0 {
			t.Fatalf("after the roll-back: %v", diff)
		}
		if !d.Running() || d.Runtime() == nil {
			t.Fatalf("containerd is not serving after the roll-back")
		}
		noCheckNamespace(t, d)
	})
	t.Logf("install figures: containerd %s in %s", d.Version, time.Since(lineStart).Round(time.Second))
}

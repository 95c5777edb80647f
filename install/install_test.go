package install

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lines are the containerd binaries of every supported line; each test
// starts from that line's own `containerd config default`.
var lines = []struct{ name, path string }{
	{"1.6.20", "/usr/bin/containerd"},
	{"1.7.35", "../bin/containerd-1.7/containerd"},
	{"2.3.7", "../bin/containerd-2.3/containerd"},
	{"2.4.2", "../bin/containerd-2.4/containerd"},
}

// needBinary fails (never skips) when a line's binary is missing: `make
// daemons` builds them.
func needBinary(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("containerd binary %s: %v (make deps daemons)", abs, err)
	}
	return abs
}

// defaultConfig writes bin's `config default` to dir/config.toml, its
// /etc/containerd/conf.d import moved to dir/conf.d.
func defaultConfig(t *testing.T, bin, dir string) string {
	t.Helper()
	out, err := exec.Command(bin, "config", "default").Output()
	if err != nil {
		t.Fatalf("%s config default: %v", bin, err)
	}
	out = bytes.ReplaceAll(out, []byte("/etc/containerd/conf.d"), []byte(filepath.Join(dir, "conf.d")))
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func options(t *testing.T, bin, cfg string, mode Mode) (Options, *bytes.Buffer) {
	var out bytes.Buffer
	o := Options{Mode: mode, Config: cfg, Containerd: bin, NoRestart: true, ShimPath: "/opt/robust/containerd-shim-runc-v2-robust",
		StateDir: filepath.Join(filepath.Dir(cfg), "state"), Stdout: &out}
	o.defaults()
	return o, &out
}

// snapshot returns every file under dir but the state directory.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			m[p+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = string(b)
		return nil
	})
	return m
}

func sameFiles(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s: %s is gone", what, p)
		case a != b:
			t.Errorf("%s: %s changed:\n%s", what, p, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s left", what, p)
		}
	}
}

func dumpOf(t *testing.T, o Options) map[string]any {
	t.Helper()
	m, err := o.dump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestInstallUninstallEveryLine(t *testing.T) {
	ctx := context.Background()
	for _, l := range lines {
		for _, mode := range []Mode{ModeRuntimeClass, ModeDefault} {
			t.Run(l.name+"/"+string(mode), func(t *testing.T) {
				bin := needBinary(t, l.path)
				dir := t.TempDir()
				cfg := defaultConfig(t, bin, dir)
				o, _ := options(t, bin, cfg, mode)
				cv, err := o.containerdVersion(ctx)
				if err != nil {
					t.Fatal(err)
				}
				setup, _ := SetupFor(cv)
				before := snapshot(t, dir)
				res, err := Install(ctx, o)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Changed {
					t.Fatal("install changed nothing")
				}
				if err := RuntimeIn(dumpOf(t, o), mode, DefaultHandler, o.ShimPath, setup, false); err != nil {
					t.Errorf("after install: %v", err)
				}
				// 2.3 and 2.4 import conf.d by default: the main file stays.
				if strings.HasPrefix(l.name, "2.") {
					if b, _ := os.ReadFile(cfg); string(b) != before[cfg] {
						t.Error("the main file was edited although it imports conf.d")
					}
				}
				if mode == ModeRuntimeClass && setup == SetupRuntimePath {
					// the runc runtime's options are carried over.
					m := dumpOf(t, o)
					for _, pl := range []string{PluginCRIv3, PluginCRIv2} {
						rts := table(m, "plugins", pl, "containerd", "runtimes")
						if rts == nil {
							continue
						}
						runc := table(rts, "runc", "options")
						ours := table(rts, DefaultHandler, "options")
						if len(runc) == 0 || len(ours) != len(runc) {
							t.Errorf("options: runc %v, ours %v", runc, ours)
						}
						break
					}
				}
				again, err := Install(ctx, o)
				if err != nil || again.Changed {
					t.Errorf("second install: changed %v, error %v (want idempotent)", again != nil && again.Changed, err)
				}
				if _, err := Uninstall(ctx, o); err != nil {
					t.Fatal(err)
				}
				sameFiles(t, "after uninstall", before, snapshot(t, dir))
				if err := RuntimeIn(dumpOf(t, o), mode, DefaultHandler, o.ShimPath, setup, true); err != nil && mode == ModeRuntimeClass {
					t.Errorf("after uninstall: %v", err)
				}
			})
		}
	}
}

func TestInstallCases(t *testing.T) {
	ctx := context.Background()
	v24 := needBinary(t, lines[3].path)
	v16 := needBinary(t, lines[0].path)
	v17 := needBinary(t, lines[1].path)

	t.Run("1.6 main file already importing conf.d", func(t *testing.T) {
		dir := t.TempDir()
		cfg := defaultConfig(t, v16, dir)
		b, _ := os.ReadFile(cfg)
		b = bytes.Replace(b, []byte("imports = []\n"), []byte("imports = [\""+filepath.Join(dir, "conf.d")+"/*.toml\"]\n"), 1)
		os.WriteFile(cfg, b, 0o644)
		os.Mkdir(filepath.Join(dir, "conf.d"), 0o755)
		os.WriteFile(filepath.Join(dir, "conf.d", "10-other.toml"), []byte("version = 2\n"), 0o644)
		before := snapshot(t, dir)
		o, _ := options(t, v16, cfg, ModeRuntimeClass)
		if _, err := Install(ctx, o); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "conf.d", DropInName)); err != nil {
			t.Errorf("drop-in not in conf.d: %v", err)
		}
		if nb, _ := os.ReadFile(cfg); string(nb) != before[cfg] {
			t.Error("main file edited")
		}
		if err := RuntimeIn(dumpOf(t, o), ModeRuntimeClass, DefaultHandler, o.ShimPath, SetupRuntimeType, false); err != nil {
			t.Error(err)
		}
		if _, err := Uninstall(ctx, o); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, "after uninstall", before, snapshot(t, dir))
	})

	t.Run("a version 2 file under a 2.x daemon", func(t *testing.T) {
		dir := t.TempDir()
		cfg := defaultConfig(t, v17, dir) // version 2, as 1.7 writes it
		before := snapshot(t, dir)
		o, _ := options(t, v24, cfg, ModeRuntimeClass)
		if _, err := Install(ctx, o); err != nil {
			t.Fatal(err)
		}
		drop, _ := os.ReadFile(filepath.Join(dir, DropInName))
		if !bytes.Contains(drop, []byte("version = 2")) || !bytes.Contains(drop, []byte(PluginCRIv2)) {
			t.Errorf("drop-in not in version 2:\n%s", drop)
		}
		if err := RuntimeIn(dumpOf(t, o), ModeRuntimeClass, DefaultHandler, o.ShimPath, SetupRuntimePath, false); err != nil {
			t.Error(err)
		}
		if _, err := Uninstall(ctx, o); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, "after uninstall", before, snapshot(t, dir))
	})

	for _, broken := range []string{
		"version = 2\n[plugins\n",
		"version = 1\n",
		"root = '/x'\n", // no version: containerd reads 1
		"version = 3\nimports = 'not-an-array'\n",
	} {
		t.Run("refused: "+strings.ReplaceAll(broken, "\n", " "), func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.toml")
			os.WriteFile(cfg, []byte(broken), 0o644)
			before := snapshot(t, dir)
			o, _ := options(t, v24, cfg, ModeRuntimeClass)
			_, err := Install(ctx, o)
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v, want ErrConfig", err)
			}
			sameFiles(t, "after a refused install", before, snapshot(t, dir))
		})
	}

	t.Run("dry-run", func(t *testing.T) {
		dir := t.TempDir()
		cfg := defaultConfig(t, v16, dir)
		before := snapshot(t, dir)
		o, out := options(t, v16, cfg, ModeDefault)
		o.DryRun = true
		if _, err := Install(ctx, o); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "would write "+filepath.Join(dir, DropInName)) || !strings.Contains(out.String(), "would write "+cfg) {
			t.Errorf("dry-run printed:\n%s", out)
		}
		sameFiles(t, "after dry-run", before, snapshot(t, dir))
	})

	t.Run("containerd does not come back: rolled back", func(t *testing.T) {
		dir := t.TempDir()
		cfg := defaultConfig(t, v24, dir)
		before := snapshot(t, dir)
		o, _ := options(t, v24, cfg, ModeRuntimeClass)
		o.NoRestart = false
		o.RestartCommand = []string{"false"}
		_, err := Install(ctx, o)
		if err == nil || !strings.Contains(err.Error(), "restarting containerd") {
			t.Fatalf("error %v, want the restart named", err)
		}
		if !strings.Contains(err.Error(), "roll-back FAILED") {
			// the roll-back's own restart fails too (false): it says so.
			t.Logf("error: %v", err)
		}
		sameFiles(t, "after a failed install", before, snapshot(t, dir))
	})

	t.Run("--replace-shim-binary without dpkg", func(t *testing.T) {
		dir := t.TempDir()
		cfg := defaultConfig(t, v24, dir)
		o, _ := options(t, v24, cfg, ModeDefault)
		o.HostRoot = dir // no usr/bin/dpkg-divert there
		o.Config = "/config.toml"
		o.ReplaceShimBinary = true
		if _, err := Install(ctx, o); !errors.Is(err, ErrReplaceShimBinary) {
			t.Errorf("error %v", err)
		}
	})
}

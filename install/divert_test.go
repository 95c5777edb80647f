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
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
)

// upstreamShim is the real upstream binary the fake hosts get a copy of.
// The tests never write under the real /usr/bin or /var/lib/dpkg: every
// dpkg-divert runs with --root on a t.TempDir().
const upstreamShim = "/usr/bin/containerd-shim-runc-v2"

// ourBinary builds ./cmd/containerd-shim-runc-v2-robust (as delegate's
// tests do) into a t.TempDir() and returns its path.
func ourBinary(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "containerd-shim-runc-v2-robust")
	cmd := exec.Command("go", "build", "-o", p, "../cmd/containerd-shim-runc-v2-robust")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return p
}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, perm); err != nil {
		t.Fatal(err)
	}
}

// fakeHost makes a Debian-like host root in a t.TempDir(): containerd 2.4
// and the C library it needs (install runs it by chroot), its default
// configuration, dpkg's admin directory with an empty diversions file,
// dpkg-divert, a copy of upstream's shim, and our binary at the default
// --shim-path (a copy of ours).
func fakeHost(t *testing.T, ours string) string {
	t.Helper()
	root := t.TempDir()
	for _, lib := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"} {
		copyFile(t, lib, filepath.Join(root, lib), 0o755)
	}
	copyFile(t, needBinary(t, lines[3].path), filepath.Join(root, "usr/bin/containerd"), 0o755)
	copyFile(t, "/usr/bin/dpkg-divert", filepath.Join(root, "usr/bin/dpkg-divert"), 0o755)
	copyFile(t, upstreamShim, filepath.Join(root, upstreamShim), 0o755)
	copyFile(t, ours, filepath.Join(root, DefaultShimPath), 0o755)
	out, err := exec.Command("chroot", root, "/usr/bin/containerd", "config", "default").Output()
	if err != nil {
		t.Fatalf("containerd config default: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/containerd/config.toml"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/diversions"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func divertOptions(root string) (Options, *bytes.Buffer) {
	var out bytes.Buffer
	o := Options{Mode: ModeDefault, ReplaceShimBinary: true, HostRoot: root, Config: "/etc/containerd/config.toml",
		Containerd: "/usr/bin/containerd", NoRestart: true, StateDir: "/state", Stdout: &out}
	o.defaults()
	return o, &out
}

// diversions is `dpkg-divert --root root --list`.
func diversions(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("dpkg-divert", "--root", root, "--list").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-divert --list: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// hostFiles is snapshot without dpkg's admin directory (dpkg-divert
// leaves diversions-old there); diversions are checked by --list.
func hostFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	m := snapshot(t, root)
	for p := range m {
		if strings.HasPrefix(p, filepath.Join(root, "var/lib/dpkg")+"/") {
			delete(m, p)
		}
	}
	return m
}

func fileIs(t *testing.T, what, p, want string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if string(b) != want {
		t.Errorf("%s: %s has other bytes (%d, want %d)", what, p, len(b), len(want))
	}
}

func TestReplaceShimBinary(t *testing.T) {
	ctx := context.Background()
	upstream, err := os.ReadFile(upstreamShim)
	if err != nil {
		t.Fatal(err)
	}
	oursPath := ourBinary(t)
	ours, err := os.ReadFile(oursPath)
	if err != nil {
		t.Fatal(err)
	}
	wantDiversion := "local diversion of " + upstreamShim + " to " + upstreamShim + ".distrib"

	t.Run("install, again, uninstall", func(t *testing.T) {
		root := fakeHost(t, oursPath)
		before := hostFiles(t, root)
		o, out := divertOptions(root)
		o.DryRun = true
		if _, err := Install(ctx, o); err != nil {
			t.Fatalf("install --dry-run: %v\n%s", err, out)
		}
		if !strings.Contains(out.String(), "would run dpkg-divert --local --rename --divert "+upstreamShim+".distrib --add "+upstreamShim) {
			t.Errorf("install --dry-run printed:\n%s", out)
		}
		sameFiles(t, "after install --dry-run", before, hostFiles(t, root))
		o.DryRun = false
		res, err := Install(ctx, o)
		if err != nil {
			t.Fatalf("install: %v\n%s", err, out)
		}
		if !res.Changed {
			t.Fatal("install changed nothing")
		}
		if got := diversions(t, root); got != wantDiversion {
			t.Errorf("diversions: %q, want %q", got, wantDiversion)
		}
		fileIs(t, "after install", filepath.Join(root, upstreamShim), string(ours))
		fileIs(t, "after install", filepath.Join(root, upstreamShim+".distrib"), string(upstream))
		if fi, err := os.Stat(filepath.Join(root, upstreamShim)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("ours: %v %v, want mode 0755", fi.Mode(), err)
		}
		if err := RuntimeIn(dumpOf(t, o), ModeDefault, DefaultHandler, o.ShimPath, SetupRuntimePath, false); err != nil {
			t.Errorf("after install: %v", err)
		}
		v := exec.Command(filepath.Join(root, upstreamShim), "-v")
		v.Env = append(os.Environ(), delegate.EnvDelegate+"=")
		vout, err := v.CombinedOutput()
		if err != nil || !strings.Contains(string(vout), "delegate: "+filepath.Join(root, upstreamShim+".distrib")+"\n") {
			t.Errorf("-v: %v:\n%s", err, vout)
		}

		installed := hostFiles(t, root)
		again, err := Install(ctx, o)
		if err != nil || again.Changed {
			t.Errorf("second install: changed %v, error %v (want idempotent)", again != nil && again.Changed, err)
		}
		sameFiles(t, "after a second install", installed, hostFiles(t, root))

		o.DryRun = true
		out.Reset()
		if _, err := Uninstall(ctx, o); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "--remove "+upstreamShim) {
			t.Errorf("uninstall --dry-run printed:\n%s", out)
		}
		sameFiles(t, "after uninstall --dry-run", installed, hostFiles(t, root))
		o.DryRun = false

		if _, err := Uninstall(ctx, o); err != nil {
			t.Fatal(err)
		}
		if got := diversions(t, root); got != "" {
			t.Errorf("diversions after uninstall: %q", got)
		}
		sameFiles(t, "after uninstall", before, hostFiles(t, root))
		if fi, err := os.Stat(filepath.Join(root, upstreamShim)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("upstream's: %v %v, want mode 0755", fi.Mode(), err)
		}
	})

	// Each failure after the diversion rolls back to byte-identical files
	// and no diversion.
	for _, tc := range []struct {
		name   string
		inject func(t *testing.T, root string, o *Options)
		want   string
	}{
		{"our binary does not name the delegate", func(t *testing.T, root string, o *Options) {
			// upstream's binary as "ours": its -v names no delegate.
			copyFile(t, upstreamShim, filepath.Join(root, DefaultShimPath), 0o755)
		}, "does not name"},
		{"containerd does not answer after the restart", func(t *testing.T, root string, o *Options) {
			o.NoRestart = false
			o.RestartCommand = []string{"true"}
			o.Address = "/run/containerd/none.sock"
			o.Timeout = 2 * time.Second
		}, "does not answer"},
	} {
		t.Run("rolled back: "+tc.name, func(t *testing.T) {
			root := fakeHost(t, oursPath)
			o, out := divertOptions(root)
			tc.inject(t, root, &o)
			before := hostFiles(t, root)
			_, err := Install(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("error %v, want %q and rolled back\n%s", err, tc.want, out)
			}
			t.Logf("install: %v", err)
			if got := diversions(t, root); got != "" {
				t.Errorf("diversions after roll-back: %q", got)
			}
			sameFiles(t, "after roll-back", before, hostFiles(t, root))
			fileIs(t, "after roll-back", filepath.Join(root, upstreamShim), string(upstream))
		})
	}

	for _, tc := range []struct {
		name   string
		inject func(t *testing.T, root string, o *Options)
		want   error
	}{
		{"--mode runtime-class", func(t *testing.T, root string, o *Options) { o.Mode = ModeRuntimeClass }, ErrReplaceShimBinary},
		{"diverted by a package already", func(t *testing.T, root string, o *Options) {
			out, err := exec.Command("dpkg-divert", "--root", root, "--package", "other", "--divert", upstreamShim+".other", "--add", upstreamShim).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}, ErrReplaceShimBinary},
		{"a .distrib there already", func(t *testing.T, root string, o *Options) {
			copyFile(t, upstreamShim, filepath.Join(root, upstreamShim+".distrib"), 0o755)
		}, ErrReplaceShimBinary},
		{"no dpkg-divert on the host", func(t *testing.T, root string, o *Options) {
			if err := os.Remove(filepath.Join(root, "usr/bin/dpkg-divert")); err != nil {
				t.Fatal(err)
			}
		}, ErrReplaceShimBinary},
		{"unwritable state directory", func(t *testing.T, root string, o *Options) {
			if err := os.WriteFile(filepath.Join(root, "not-a-dir"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			o.StateDir = "/not-a-dir/state"
		}, nil},
	} {
		t.Run("nothing changed: "+tc.name, func(t *testing.T) {
			root := fakeHost(t, oursPath)
			o, _ := divertOptions(root)
			tc.inject(t, root, &o)
			divs := diversions(t, root)
			before := hostFiles(t, root)
			_, err := Install(ctx, o)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if got := diversions(t, root); got != divs {
				t.Errorf("diversions: %q, want %q", got, divs)
			}
			sameFiles(t, "after a refused install", before, hostFiles(t, root))
		})
	}
}

package delegate

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSelf makes <dir>/bin/robust (an executable file) and points selfExe
// at a link to it, as /proc/self/exe is; it returns <dir>/bin.
func fakeSelf(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	writeExe(t, filepath.Join(bin, "robust"))
	link := filepath.Join(dir, "exe")
	if err := os.Symlink(filepath.Join(bin, "robust"), link); err != nil {
		t.Fatal(err)
	}
	old := selfExe
	selfExe = link
	t.Cleanup(func() { selfExe = old })
	return bin
}

func writeExe(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFind(t *testing.T) {
	t.Run("env names it", func(t *testing.T) {
		fakeSelf(t)
		p := filepath.Join(t.TempDir(), "upstream")
		writeExe(t, p)
		t.Setenv(EnvDelegate, p)
		if got, err := Find(); err != nil || got != p {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run("env relative: refused, nothing else tried", func(t *testing.T) {
		bin := fakeSelf(t)
		writeExe(t, filepath.Join(bin, BinaryName))
		t.Setenv(EnvDelegate, "bin/"+BinaryName)
		if _, err := Find(); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("env names this binary: refused", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, filepath.Join(bin, "robust"))
		if _, err := Find(); err == nil || !strings.Contains(err.Error(), "is this binary") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("next to this binary before PATH", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		writeExe(t, filepath.Join(bin, BinaryName))
		other := t.TempDir()
		writeExe(t, filepath.Join(other, BinaryName))
		t.Setenv("PATH", other)
		if got, err := Find(); err != nil || got != filepath.Join(bin, BinaryName) {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run("installed under upstream's name: itself skipped, PATH's taken", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		// Our binary under upstream's name, next to itself and first on PATH.
		if err := os.Link(filepath.Join(bin, "robust"), filepath.Join(bin, BinaryName)); err != nil {
			t.Fatal(err)
		}
		moved := t.TempDir()
		writeExe(t, filepath.Join(moved, BinaryName))
		t.Setenv("PATH", bin+":"+moved)
		if got, err := Find(); err != nil || got != filepath.Join(moved, BinaryName) {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run("diverted: this binary as upstream's name, upstream beside it as .distrib", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		// /proc/self/exe names BinaryName itself, as when dpkg-divert put
		// upstream's aside and ours in its place.
		if err := os.Rename(filepath.Join(bin, "robust"), filepath.Join(bin, BinaryName)); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(selfExe); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(bin, BinaryName), selfExe); err != nil {
			t.Fatal(err)
		}
		writeExe(t, filepath.Join(bin, DivertedName))
		other := t.TempDir()
		writeExe(t, filepath.Join(other, BinaryName))
		t.Setenv("PATH", other)
		if got, err := Find(); err != nil || got != filepath.Join(bin, DivertedName) {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run("diverted on PATH: its .distrib before later PATH entries", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		usr := t.TempDir()
		if err := os.Link(filepath.Join(bin, "robust"), filepath.Join(usr, BinaryName)); err != nil {
			t.Fatal(err)
		}
		writeExe(t, filepath.Join(usr, DivertedName))
		later := t.TempDir()
		writeExe(t, filepath.Join(later, BinaryName))
		t.Setenv("PATH", usr+":"+later)
		if got, err := Find(); err != nil || got != filepath.Join(usr, DivertedName) {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run(".distrib beside a candidate that is not this binary: the candidate", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		writeExe(t, filepath.Join(bin, BinaryName))
		writeExe(t, filepath.Join(bin, DivertedName))
		if got, err := Find(); err != nil || got != filepath.Join(bin, BinaryName) {
			t.Fatalf("Find() = %q, %v", got, err)
		}
	})
	t.Run("diverted but no .distrib: the error names it", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		if err := os.Link(filepath.Join(bin, "robust"), filepath.Join(bin, BinaryName)); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", bin)
		_, err := Find()
		if err == nil || !strings.Contains(err.Error(), filepath.Join(bin, DivertedName)+" does not exist") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("env names this binary under upstream's name: refused, .distrib not tried", func(t *testing.T) {
		bin := fakeSelf(t)
		if err := os.Link(filepath.Join(bin, "robust"), filepath.Join(bin, BinaryName)); err != nil {
			t.Fatal(err)
		}
		writeExe(t, filepath.Join(bin, DivertedName))
		t.Setenv(EnvDelegate, filepath.Join(bin, BinaryName))
		if _, err := Find(); err == nil || !strings.Contains(err.Error(), "is this binary") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("none: one line naming where it looked", func(t *testing.T) {
		bin := fakeSelf(t)
		t.Setenv(EnvDelegate, "")
		notExe := t.TempDir()
		if err := os.WriteFile(filepath.Join(notExe, BinaryName), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", notExe+"::relative")
		_, err := Find()
		var nf *NotFoundError
		if !errors.As(err, &nf) {
			t.Fatalf("error %v", err)
		}
		msg := err.Error()
		for _, want := range []string{filepath.Join(bin, BinaryName) + " does not exist", filepath.Join(notExe, BinaryName) + " is not executable", EnvDelegate} {
			if !strings.Contains(msg, want) {
				t.Errorf("%q lacks %q", msg, want)
			}
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("not one line: %q", msg)
		}
	})
}

// TestExecHandsOverEverything builds the product binary and runs `start`
// through it: the delegate (a script) must get the same arguments, stdin,
// environment and working directory, and be the process itself (execve,
// not a child). Installed under upstream's name with no delegate, the
// binary must fail with one line instead of executing itself.
func TestExecHandsOverEverything(t *testing.T) {
	dir := t.TempDir()
	ours := filepath.Join(dir, "containerd-shim-runc-v2-robust")
	build := exec.Command("go", "build", "-o", ours, "../cmd/containerd-shim-runc-v2-robust")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	script := `#!/bin/sh
echo "argv0=$0"
echo "args=$*"
echo "cwd=$(pwd)"
echo "env=$MARK"
echo "stdin=$(cat)"
`
	if err := os.WriteFile(filepath.Join(dir, BinaryName), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	cmd := exec.Command(ours, "-namespace", "ns", "-id", "c1", "-address", "/run/c.sock", "start")
	cmd.Dir = work
	cmd.Env = []string{"MARK=kept", "PATH=/usr/bin:/bin", "CONTAINERD_SHIM_ROBUST_DELEGATE="}
	cmd.Stdin = strings.NewReader("bootstrap-params")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	for _, want := range []string{
		"argv0=" + filepath.Join(dir, BinaryName),
		"args=-namespace ns -id c1 -address /run/c.sock start",
		"cwd=" + work,
		"env=kept",
		"stdin=bootstrap-params",
	} {
		if !bytes.Contains(out, []byte(want+"\n")) {
			t.Errorf("delegate output lacks %q:\n%s", want, out)
		}
	}

	// Installed under upstream's own name, nothing else around.
	alone := t.TempDir()
	asUpstream := filepath.Join(alone, BinaryName)
	data, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(asUpstream, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(asUpstream, "-namespace", "ns", "-id", "c1", "start")
	cmd.Env = []string{"PATH=" + alone}
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v:\n%s", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "is this binary") {
		t.Errorf("want one line saying it will not exec itself, got:\n%s", out)
	}

	// Diverted: upstream's (the script) beside it as .distrib, as
	// dpkg-divert --local --rename leaves it; nothing on PATH.
	if err := os.WriteFile(filepath.Join(alone, DivertedName), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(asUpstream, "-namespace", "ns", "-id", "c1", "start")
	cmd.Env = []string{"PATH=/nonexistent"}
	cmd.Stdin = strings.NewReader("")
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("diverted start: %v\n%s", err, out)
	}
	if want := "argv0=" + filepath.Join(alone, DivertedName) + "\n"; !bytes.Contains(out, []byte(want)) {
		t.Errorf("diverted: delegate output lacks %q:\n%s", want, out)
	}
}

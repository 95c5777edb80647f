package install

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCtrRunArgs: the same ctr command line on every line (1.6, 1.7 and
// 2.x's ctr take `--runtime <absolute path>`, `--rootfs` and `--cgroup ""`
// alike; containerd 1.6+ resolves an absolute runtime to that binary).
func TestCtrRunArgs(t *testing.T) {
	got := CtrRunArgs("/run/containerd/containerd.sock", "/usr/local/bin/shim", "/var/lib/x/rootfs", "check-1")
	want := []string{"--address", "/run/containerd/containerd.sock", "--namespace", CheckNamespace,
		"run", "--rm", "--rootfs", "--runtime", "/usr/local/bin/shim", "--cgroup", "",
		"/var/lib/x/rootfs", "check-1", "/" + checkBinary, "-h"}
	if !slices.Equal(got, want) {
		t.Errorf("CtrRunArgs:\n got %q\nwant %q", got, want)
	}
}

func TestFindCtr(t *testing.T) {
	exe := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name       string
		files      []string // under the host root
		containerd string
		want       string // "" = ErrNoCtr
	}{
		{"beside containerd first", []string{"/opt/cd/bin/ctr", "/usr/bin/ctr"}, "/opt/cd/bin/containerd", "/opt/cd/bin/ctr"},
		{"usual directories", []string{"/usr/bin/ctr"}, "/opt/cd/bin/containerd", "/usr/bin/ctr"},
		{"containerd by name", []string{"/usr/bin/ctr"}, "containerd", "/usr/bin/ctr"},
		{"absent", nil, "/opt/cd/bin/containerd", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				exe(t, filepath.Join(root, f))
			}
			t.Setenv("PATH", "/nonexistent-for-test")
			o := Options{HostRoot: root, Containerd: tc.containerd}
			got, err := o.findCtr()
			if tc.want == "" {
				if !errors.Is(err, ErrNoCtr) || !strings.Contains(err.Error(), "--no-container-check") {
					t.Errorf("findCtr = %q, %v; want ErrNoCtr naming --no-container-check", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("findCtr = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

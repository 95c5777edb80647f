package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestInstallReplaceShimBinaryRefused: --replace-shim-binary's refusals
// exit 2 saying nothing changed. Each runs against a t.TempDir() host
// root (never the real /usr/bin or dpkg database) and stops before
// running anything.
func TestInstallReplaceShimBinaryRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"with --mode runtime-class", []string{"--replace-shim-binary"}, "refused with --mode runtime-class"},
		{"no dpkg-divert on the host", []string{"--replace-shim-binary", "--mode", "default"}, "no dpkg-divert on this host"},
		{"upstream's path not containerd-shim-runc-v2", []string{"--replace-shim-binary", "--mode", "default", "--upstream-shim", "/usr/bin/other"}, "an absolute path ending in containerd-shim-runc-v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"--host-root", t.TempDir(), "--no-restart"}, tc.args...)
			code := RunInstall(context.Background(), args, false, &stdout, &stderr)
			if code != ExitUsage || !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), "(nothing changed)") {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), ExitUsage, tc.want)
			}
		})
	}
}

// TestInstallNoContainerCheckFlag: install's usage offers the way to skip
// the container check that its failure message names.
func TestInstallNoContainerCheckFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := RunInstall(context.Background(), []string{"-h"}, false, &stdout, &stderr); code != ExitOK {
		t.Fatalf("install -h: exit %d", code)
	}
	if !strings.Contains(stderr.String(), "-no-container-check") {
		t.Errorf("install -h does not offer -no-container-check:\n%s", stderr.String())
	}
}

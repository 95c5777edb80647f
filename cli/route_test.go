package cli

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// errExecFake is what the test's delegate exec returns: Run then reports it
// as a failed execve would be.
var errExecFake = errors.New("fake execve")

// TestRunRoutes is Run's routing table: which command line is ours (gc,
// install and uninstall as the first argument, delete as the last, -v,
// -h), which goes to the delegate with its arguments unchanged (start,
// -info, the serving shim, no arguments, anything we do not know), and
// what a delete with flags we do not know gets (ExitUsage, never the
// delegate). The delegate's execve is replaced by a recorder; ours run for
// real, on command lines that change nothing (bad flags, an invalid id).
func TestRunRoutes(t *testing.T) {
	t.Setenv(ttrpcAddressEnv, "")
	t.Setenv(ops.EnvMetricsDir, "")
	// No delegate can be found: -v must still answer with ours.
	t.Setenv(delegate.EnvDelegate, filepath.Join(t.TempDir(), "none"))
	state := t.TempDir()
	var execed [][]string
	old := execDelegate
	execDelegate = func(args []string) error {
		execed = append(execed, append([]string{}, args...))
		return errExecFake
	}
	t.Cleanup(func() { execDelegate = old })

	containerd := []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "web"}
	with := func(extra ...string) []string { return append(append([]string{}, containerd...), extra...) }

	for _, tc := range []struct {
		name string
		args []string
		// delegated: the delegate must get args unchanged, and Run return
		// ExitFailed when its execve fails. Otherwise code is the exit
		// status, and stdout / stderr must contain the strings given
		// (what only the command named says).
		delegated      bool
		code           int
		stdout, stderr string
	}{
		{name: "no arguments", args: nil, delegated: true},
		{name: "start", args: with("-debug", "start"), delegated: true},
		{name: "start alone", args: []string{"start"}, delegated: true},
		{name: "flags after start reach the delegate where they were", args: with("start", "-debug"), delegated: true},
		{name: "-info", args: []string{"-info"}, delegated: true},
		{name: "the serving shim start spawns", args: with(), delegated: true},
		{name: "an action we do not know", args: with("frobnicate"), delegated: true},
		{name: "a flag we do not know, no delete", args: with("-newflag", "x", "start"), delegated: true},
		{name: "delete followed by another word", args: with("delete", "extra"), delegated: true},
		{name: "a bad flag after delete: the last argument is not delete", args: with("delete", "-bogus"), delegated: true},
		{name: "delete as the value of -id", args: []string{"-namespace", "ns", "-id", "delete"}, delegated: true},

		{name: "gc", args: []string{"gc", "--bogus"}, code: ExitUsage, stderr: "gc [flags]"},
		{name: "gc -h", args: []string{"gc", "-h"}, code: ExitOK, stderr: "--older-than"},
		{name: "gc with our flags before the word", args: []string{"-namespace", "ns", "gc"}, code: ExitUsage, stderr: "gc takes its flags after the word gc"},
		{name: "install", args: []string{"install", "--bogus"}, code: ExitUsage, stderr: "Usage of install:"},
		{name: "uninstall", args: []string{"uninstall", "--bogus"}, code: ExitUsage, stderr: "Usage of uninstall:"},
		{name: "-h", args: []string{"-h"}, code: ExitOK, stdout: "Flags of delete:"},
		{name: "-help", args: []string{"-help"}, code: ExitOK, stdout: "Flags of delete:"},
		{name: "-v", args: []string{"-v"}, code: ExitFailed, stdout: Name + ":\n  Version: "},
		{name: "-version", args: []string{"-version"}, code: ExitFailed, stdout: "delegate: none"},
		{name: "delete with a flag we do not know", args: with("-bundle", "/b", "-newflag", "x", "delete"), code: ExitUsage, stderr: Name + ": delete: flag provided but not defined: -newflag"},
		{name: "delete by hand, invalid id", args: []string{"-namespace", "ns", "-id", "../x", "--state-dir", state, "delete"}, code: ExitUsage, stderr: "NOT run"},
		{name: "delete by hand, flags after delete", args: []string{"-namespace", "ns", "delete", "-id", "../x", "--state-dir", state, "--format", "json"}, code: ExitUsage, stdout: `"result":"error"`},
		{name: "delete by containerd, invalid id", args: []string{"-namespace", "ns", "-address", "/a", "-id", "../x", "-bundle", state, "delete"}, code: ExitFailed, stderr: Name + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			execed = nil
			var stdout, stderr bytes.Buffer
			code := Run(tc.args, &stdout, &stderr)
			if tc.delegated {
				if len(execed) != 1 || !reflect.DeepEqual(execed[0], append([]string{}, tc.args...)) {
					t.Fatalf("delegate got %q, want %q once", execed, tc.args)
				}
				if code != ExitFailed || !strings.Contains(stderr.String(), errExecFake.Error()) || stdout.Len() > 0 {
					t.Errorf("failed execve: exit %d, stdout %q, stderr %q; want %d and the error", code, stdout.String(), stderr.String(), ExitFailed)
				}
				return
			}
			if len(execed) > 0 {
				t.Fatalf("ours, yet the delegate got %q (exit %d, stderr %q)", execed, code, stderr.String())
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stdout %q, stderr %q; want them to contain %q and %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
		})
	}
}

package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"google.golang.org/protobuf/proto"
)

const testNS = "robust-test"

func TestParseCommandLine(t *testing.T) {
	containerd := []string{"-namespace", "ns", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "web", "-bundle", "/b/ns/web", "-debug", "delete"}
	for _, tc := range []struct {
		name     string
		args     []string
		wantErr  bool
		action   string
		wantArgs []string
		check    func(t *testing.T, cl *commandLine)
	}{
		{
			name: "containerd's delete is left as it is", args: containerd, action: "delete", wantArgs: containerd,
			check: func(t *testing.T, cl *commandLine) {
				if cl.namespace != "ns" || cl.id != "web" || cl.bundle != "/b/ns/web" || cl.address != "/run/c.sock" || !cl.debug {
					t.Errorf("parsed %+v", cl)
				}
			},
		},
		{
			name: "flags after the action move before it", args: []string{"-namespace", "ns", "-id", "web", "delete", "--format", "json", "--state-dir=/s", "-force"},
			action: "delete", wantArgs: []string{"-namespace", "ns", "-id", "web", "--format", "json", "--state-dir=/s", "-force", "delete"},
			check: func(t *testing.T, cl *commandLine) {
				if cl.format != "json" || cl.stateDir != "/s" || !cl.force {
					t.Errorf("parsed %+v", cl.deleteFlags)
				}
			},
		},
		{name: "serving shim, no action", args: []string{"-namespace", "ns", "-id", "web", "-address", "/a"}, action: "", wantArgs: []string{"-namespace", "ns", "-id", "web", "-address", "/a"}},
		{name: "start", args: []string{"-namespace", "ns", "-id", "web", "start"}, action: "start", wantArgs: []string{"-namespace", "ns", "-id", "web", "start"}},
		{name: "unknown flag goes to the framework", args: []string{"-namespace", "ns", "-bogus", "delete"}, wantErr: true},
		{name: "second positional", args: []string{"-namespace", "ns", "delete", "extra"}, wantErr: true},
		{name: "after --, nothing moves", args: []string{"-namespace", "ns", "--", "delete", "-x"}, action: "delete", wantArgs: []string{"-namespace", "ns", "--", "delete", "-x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := parseCommandLine(tc.args)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want an error, got %+v", cl)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cl.action != tc.action {
				t.Errorf("action %q, want %q", cl.action, tc.action)
			}
			if !reflect.DeepEqual(cl.args, tc.wantArgs) {
				t.Errorf("args %q, want %q", cl.args, tc.wantArgs)
			}
			if tc.check != nil {
				tc.check(t, cl)
			}
		})
	}
}

func TestByContainerd(t *testing.T) {
	t.Setenv(ttrpcAddressEnv, "")
	if (&commandLine{}).byContainerd() {
		t.Error("no -address, no TTRPC_ADDRESS: by hand")
	}
	if !(&commandLine{address: "/run/containerd/containerd.sock"}).byContainerd() {
		t.Error("-address: containerd")
	}
	t.Setenv(ttrpcAddressEnv, "/run/containerd/containerd.sock.ttrpc")
	if !(&commandLine{}).byContainerd() {
		t.Error("TTRPC_ADDRESS: containerd")
	}
}

func TestResolveStateDir(t *testing.T) {
	t.Setenv(EnvStateDir, "")
	if got := resolveStateDir(""); got != ops.DefaultStateDir {
		t.Errorf("default: %q", got)
	}
	t.Setenv(EnvStateDir, "/env")
	if got := resolveStateDir(""); got != "/env" {
		t.Errorf("env: %q", got)
	}
	if got := resolveStateDir("/flag"); got != "/flag" {
		t.Errorf("flag: %q", got)
	}
}

// manualDelete runs the by-hand delete from the working directory dir.
func manualDelete(t *testing.T, dir string, args ...string) (code int, stdout []byte, stderr string) {
	t.Helper()
	t.Chdir(dir)
	t.Setenv(ttrpcAddressEnv, "")
	cl, err := parseCommandLine(args)
	if err != nil {
		t.Fatal(err)
	}
	if cl.action != "delete" || cl.byContainerd() {
		t.Fatalf("%q is not a delete by hand", args)
	}
	var out, errb bytes.Buffer
	code = runManualDelete(context.Background(), cl, &out, &errb)
	t.Logf("exit %d, stderr:\n%s", code, errb.String())
	return code, out.Bytes(), errb.String()
}

func TestManualDeleteFromAnywhere(t *testing.T) {
	testutil.NeedRoot(t)
	state := t.TempDir()
	t.Setenv(ops.EnvMetricsDir, "")
	newTask := func(t *testing.T, files map[string]string) (id, dir string) {
		t.Helper()
		id = testutil.RandID("byhand")
		dir = filepath.Join(state, testNS, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if addr, ok := files["address"]; ok {
			// The socket directory, as containerd 2.x links it.
			if err := os.Symlink(filepath.Dir(strings.TrimPrefix(addr, "unix://")), filepath.Join(dir, "s")); err != nil {
				t.Fatal(err)
			}
		}
		return id, dir
	}
	elsewhere := t.TempDir()

	t.Run("text: report on stderr, DeleteResponse on stdout", func(t *testing.T) {
		sock := shimSocketPath(t)
		testutil.DeadSocket(t, sock)
		id, dir := newTask(t, map[string]string{"address": "unix://" + sock, "runtime": ""})
		code, out, stderr := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "delete", "--state-dir", state)
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		testutil.AssertGone(t, dir, sock)
		var resp taskapi.DeleteResponse
		if err := proto.Unmarshal(out, &resp); err != nil || resp.ExitStatus != 137 {
			t.Errorf("stdout is not the DeleteResponse: %v, %+v", err, &resp)
		}
		for _, want := range []string{"robust delete " + testNS + "/" + id + ": deleted", "task directory: " + dir, "remove ", "left: nothing"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q", want)
			}
		}
	})

	t.Run("json on stdout, env state dir", func(t *testing.T) {
		id, dir := newTask(t, map[string]string{"runtime": "", "address": "unix://" + shimSocketPath(t)})
		t.Setenv(EnvStateDir, state)
		code, out, _ := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "--format", "json", "delete")
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		testutil.AssertGone(t, dir)
		var rec ops.DeleteRecord
		if err := json.Unmarshal(out, &rec); err != nil {
			t.Fatalf("stdout is not one JSON record: %v: %q", err, out)
		}
		if rec.Result != ops.ResultDeleted || rec.Bundle != dir || rec.Trigger != ops.TriggerManual || !slices.EqualFunc(rec.Steps, deletion.Steps, func(r ops.StepRecord, step string) bool { return r.Step == step }) || len(rec.Left) != 0 {
			t.Errorf("record: %+v", rec)
		}
	})

	t.Run("live shim: refused, then forced", func(t *testing.T) {
		sock := shimSocketPath(t)
		testutil.Listen(t, sock)
		id, dir := newTask(t, map[string]string{"address": "unix://" + sock, "runtime": ""})
		refused(t, elsewhere, dir, "got no answer", "-namespace", testNS, "-id", id, "--state-dir", state, "--format", "json", "delete")
		code, _, stderr := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "--state-dir", state, "-force", "delete")
		if code != ExitOK {
			t.Fatalf("forced: exit %d", code)
		}
		testutil.AssertGone(t, dir)
		if _, err := os.Stat(sock); err != nil {
			t.Errorf("the live shim's socket was removed: %v", err)
		}
		if !strings.Contains(stderr, "socket is live") {
			t.Errorf("forced delete does not report the live socket it left")
		}
	})

	t.Run("a shim process still holding its removed socket: refused", func(t *testing.T) {
		// Nothing answers at the recorded address (its file is gone), yet
		// the task's shim runs and listens on it: the task is alive.
		sock := shimSocketPath(t)
		id, dir := newTask(t, map[string]string{"address": "unix://" + sock, "runtime": ""})
		shim := testutil.FakeShim(t, testNS, id, sock, testutil.ShimSilent)
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
		refused(t, elsewhere, dir, "holds the task's socket", "-namespace", testNS, "-id", id, "--state-dir", state, "--format", "json", "delete")
		if !testutil.Alive(shim.Process.Pid) {
			t.Errorf("refused, yet the shim %d was killed", shim.Process.Pid)
		}
	})

	t.Run("invalid id: usage", func(t *testing.T) {
		code, _, _ := manualDelete(t, elsewhere, "-namespace", testNS, "-id", "../etc", "--state-dir", state, "delete")
		if code != ExitUsage {
			t.Fatalf("exit %d, want %d", code, ExitUsage)
		}
	})
}

// refused runs a delete by hand from the directory from with args (with
// --format json) and checks it was refused: ExitRefused, the JSON record
// (result refused, the task directory dir, why containing because, how to
// delete it instead, no steps) on stdout, the task directory in place.
func refused(t *testing.T, from, dir, because string, args ...string) {
	t.Helper()
	code, stdout, _ := manualDelete(t, from, args...)
	if code != ExitRefused {
		t.Fatalf("exit %d, want %d", code, ExitRefused)
	}
	var rec ops.DeleteRecord
	if err := json.Unmarshal(stdout, &rec); err != nil {
		t.Fatalf("stdout is not one JSON record: %v: %q", err, stdout)
	}
	if rec.Result != ops.ResultRefused || rec.Bundle != dir || !strings.Contains(rec.Error, because) || !strings.Contains(rec.Error, "task delete --force") || !strings.Contains(rec.Error, "-force to kill") || len(rec.Steps) != 0 {
		t.Errorf("record: %+v", rec)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("refused, yet the task directory is gone: %v", err)
	}
}

func TestRunGCUsage(t *testing.T) {
	for _, args := range [][]string{{"--format", "yaml"}, {"extra"}, {"--namespace", "a/b"}, {"--older-than", "-1s"}, {"--bogus"}} {
		var out, errb bytes.Buffer
		if code := RunGC(context.Background(), args, &out, &errb); code != ExitUsage {
			t.Errorf("gc %q: exit %d, want %d", args, code, ExitUsage)
		}
	}
	var out, errb bytes.Buffer
	if code := RunGC(context.Background(), []string{"-h"}, &out, &errb); code != ExitOK || !strings.Contains(errb.String(), "--older-than") && !strings.Contains(errb.String(), "-older-than") {
		t.Errorf("gc -h: exit %d, %q", code, errb.String())
	}
}

// shimSocketPath is a path for a shim's socket named as containerd names
// them (64 hex digits) in a directory of the test's own: only such a socket
// is ever removed as dead.
func shimSocketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "s") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, fmt.Sprintf("%x", sha256.Sum256([]byte(t.Name()))))
}

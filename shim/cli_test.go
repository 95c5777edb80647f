package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

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

func TestRequestTaskDir(t *testing.T) {
	state := t.TempDir()
	taskCwd := filepath.Join(t.TempDir(), "web")
	if err := os.Mkdir(taskCwd, 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	for _, tc := range []struct {
		name, cwd string
		req       Request
		want      string
		wantErr   bool
	}{
		{"bundle wins", other, Request{Namespace: "ns", ID: "web", Bundle: "/x/ns/web", StateDir: state}, "/x/ns/web", false},
		{"cwd is the task directory", taskCwd, Request{Namespace: "ns", ID: "web", StateDir: state}, taskCwd, false},
		{"elsewhere: state dir", other, Request{Namespace: "ns", ID: "web", StateDir: state}, filepath.Join(state, "ns", "web"), false},
		{"elsewhere, no state dir: cwd (refused later)", other, Request{Namespace: "ns", ID: "web"}, other, false},
		{"bad id", other, Request{Namespace: "ns", ID: "../web", StateDir: state}, "", true},
		{"bad namespace", other, Request{Namespace: "a/b", ID: "web", StateDir: state}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(tc.cwd)
			got, err := tc.req.TaskDir()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("TaskDir() = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestResolveStateDir(t *testing.T) {
	t.Setenv(EnvStateDir, "")
	if got := resolveStateDir(""); got != DefaultStateDir {
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

// listen serves a unix socket at path until the test ends.
func listen(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

// deadSocket leaves a unix socket file at path that nobody listens on.
func deadSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
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
	needRoot(t)
	state := t.TempDir()
	t.Setenv(EnvMetricsDir, "")
	newTask := func(t *testing.T, files map[string]string) (id, dir string) {
		t.Helper()
		id = randID("byhand")
		dir = filepath.Join(state, testNS, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return id, dir
	}
	elsewhere := t.TempDir()

	t.Run("text: report on stderr, DeleteResponse on stdout", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		deadSocket(t, sock)
		id, dir := newTask(t, map[string]string{"address": "unix://" + sock, "runtime": ""})
		code, out, stderr := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "delete", "--state-dir", state)
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		assertGone(t, dir, sock)
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
		id, dir := newTask(t, map[string]string{"runtime": ""})
		t.Setenv(EnvStateDir, state)
		code, out, _ := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "--format", "json", "delete")
		if code != ExitOK {
			t.Fatalf("exit %d", code)
		}
		assertGone(t, dir)
		var rec DeleteRecord
		if err := json.Unmarshal(out, &rec); err != nil {
			t.Fatalf("stdout is not one JSON record: %v: %q", err, out)
		}
		if rec.Result != ResultDeleted || rec.Bundle != dir || rec.Trigger != TriggerManual || len(rec.Steps) != 6 || len(rec.Left) != 0 {
			t.Errorf("record: %+v", rec)
		}
	})

	t.Run("live shim: refused, then forced", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s")
		listen(t, sock)
		id, dir := newTask(t, map[string]string{"address": "unix://" + sock, "runtime": ""})
		code, out, _ := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "--state-dir", state, "--format", "json", "delete")
		if code != ExitRefused {
			t.Fatalf("exit %d, want %d", code, ExitRefused)
		}
		var rec DeleteRecord
		if err := json.Unmarshal(out, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Result != ResultRefused || !strings.Contains(rec.Error, "accepts connections") || len(rec.Steps) != 0 {
			t.Errorf("record: %+v", rec)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("refused, yet the task directory is gone: %v", err)
		}
		code, _, stderr := manualDelete(t, elsewhere, "-namespace", testNS, "-id", id, "--state-dir", state, "-force", "delete")
		if code != ExitOK {
			t.Fatalf("forced: exit %d", code)
		}
		assertGone(t, dir)
		if _, err := os.Stat(sock); err != nil {
			t.Errorf("the live shim's socket was removed: %v", err)
		}
		if !strings.Contains(stderr, "socket is live") {
			t.Errorf("forced delete does not report the live socket it left")
		}
	})

	t.Run("invalid id: usage", func(t *testing.T) {
		code, _, _ := manualDelete(t, elsewhere, "-namespace", testNS, "-id", "../etc", "--state-dir", state, "delete")
		if code != ExitUsage {
			t.Fatalf("exit %d, want %d", code, ExitUsage)
		}
	})
}

// fakeShim starts a process whose command line is a shim's for ns/id (argv[0]
// "containerd-shim-runc-v2"), running sh; Cleanup kills it.
func fakeShim(t *testing.T, ns, id string, action ...string) *exec.Cmd {
	t.Helper()
	args := append([]string{"containerd-shim-runc-v2", "-c", "sleep 1000", "-namespace", ns, "-id", id}, action...)
	cmd := &exec.Cmd{Path: "/bin/sh", Args: args}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// sh reads its -c script only after exec: wait until /proc shows argv.
	deadline := time.Now().Add(5 * time.Second)
	for {
		args, _ := procCmdline(cmd.Process.Pid)
		if isShimCommand(args) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
}

// bundleFields is what the probe reads from a bundle.
type bundleFields struct{ ns, id, address string }

func (f bundleFields) bundle() *bundle.Bundle {
	return &bundle.Bundle{Namespace: f.ns, ID: f.id, Address: f.address}
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	live, dead := filepath.Join(dir, "live"), filepath.Join(dir, "dead")
	listen(t, live)
	deadSocket(t, dead)
	plain := filepath.Join(dir, "file")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	id := randID("probe")
	fakeShim(t, "probe-ns", id)
	fakeShim(t, "probe-ns", id+"-deleting", "-bundle", "/x", "delete")
	p := newProber()
	for _, tc := range []struct {
		name    string
		b       bundleFields
		alive   bool
		whyPart string
	}{
		{"live socket", bundleFields{ns: "n", id: "a", address: "unix://" + live}, true, "accepts connections"},
		{"dead socket", bundleFields{ns: "n", id: "a", address: "unix://" + dead}, false, "refuses connections"},
		{"missing socket", bundleFields{ns: "n", id: "a", address: "unix://" + filepath.Join(dir, "none")}, false, "is missing"},
		{"regular file", bundleFields{ns: "n", id: "a", address: "unix://" + plain}, false, "refuses connections"},
		{"abstract, nobody", bundleFields{ns: "n", id: "a", address: "unix://@" + randID("abstract")}, false, "refuses"},
		{"no address, shim process runs", bundleFields{ns: "probe-ns", id: id}, true, "shim process"},
		{"a shim's delete is not a live shim", bundleFields{ns: "probe-ns", id: id + "-deleting"}, false, "no shim process"},
		{"same id, other namespace", bundleFields{ns: "other", id: id}, false, "no shim process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := p.probe(tc.b.bundle())
			if st.Alive != tc.alive || !strings.Contains(st.Why, tc.whyPart) {
				t.Errorf("probe = %+v, want alive=%v, why containing %q", st, tc.alive, tc.whyPart)
			}
		})
	}
}

func TestParseShimArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want shimProc
	}{
		{[]string{"-namespace", "k8s.io", "-id", "abc", "-address", "/run/containerd/containerd.sock"}, shimProc{namespace: "k8s.io", id: "abc"}},
		{[]string{"-namespace", "ns", "-address", "a", "-publish-binary", "b", "-id", "x", "-bundle", "/b", "-debug", "delete"}, shimProc{namespace: "ns", id: "x", action: "delete"}},
		{[]string{"--namespace=ns", "--id=x", "start"}, shimProc{namespace: "ns", id: "x", action: "start"}},
	} {
		if got := parseShimArgs(tc.args); got != tc.want {
			t.Errorf("parseShimArgs(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestManagerFlagsRegisterOnFrameworkFlagSet(t *testing.T) {
	// The framework defines its own flags on the same set after ours:
	// names must not clash (flag would panic).
	m := NewManager(RuntimeName)
	fs := flagSetWithFramework(t)
	m.flags.register(fs)
	if err := fs.Parse([]string{"-namespace", "ns", "-id", "x", "-state-dir", "/s", "--format", "json", "-force", "delete"}); err != nil {
		t.Fatal(err)
	}
	if m.flags.stateDir != "/s" || m.flags.format != "json" || !m.flags.force || fs.Arg(0) != "delete" {
		t.Errorf("flags %+v, action %q", m.flags, fs.Arg(0))
	}
}

// flagSetWithFramework is a flag set with the shim framework's flags
// (runtime/v2/shim parseFlags, containerd v1.7).
func flagSetWithFramework(t *testing.T) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet("framework", flag.ContinueOnError)
	for _, b := range []string{"debug", "v"} {
		fs.Bool(b, false, "")
	}
	for _, s := range []string{"namespace", "id", "socket", "bundle", "address", "publish-binary"} {
		fs.String(s, "", "")
	}
	return fs
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

func TestDeleteRecord(t *testing.T) {
	rep := &Report{Namespace: "ns", ID: "x", Bundle: "/b/ns/x", Pid: 42, Duration: 30 * time.Millisecond, Steps: []StepReport{
		{Step: StepResolve, Outcome: OutcomeDone, Duration: time.Millisecond},
		{Step: StepRelease, Outcome: OutcomeFailed, Problems: []string{"remove cgroup /sys/fs/cgroup/x: device or resource busy"}},
		{Step: StepUnmount, Outcome: OutcomeFailed, Problems: []string{"/b/ns/x/rootfs still mounted"}},
	}}
	for _, tc := range []struct {
		err    error
		result Result
		left   int
	}{
		{nil, ResultIncomplete, 2},
		{fmt.Errorf("%w: /b/ns/x: a mount under it could not be removed", ErrUnsafe), ResultLeft, 3},
	} {
		rec := NewDeleteRecord(rep, tc.err, "", TriggerGC)
		if rec.Result != tc.result || len(rec.Left) != tc.left || rec.Pid != 42 || rec.DurationSeconds != 0.03 {
			t.Errorf("err %v: record %+v", tc.err, rec)
		}
		var back DeleteRecord
		if err := json.Unmarshal(rec.JSON(), &back); err != nil || !reflect.DeepEqual(back.Left, rec.Left) {
			t.Errorf("JSON round trip: %v", err)
		}
		if txt := rec.Text(); !strings.Contains(txt, "left:\n    release: remove cgroup") {
			t.Errorf("text lacks what was left:\n%s", txt)
		}
	}
	if r := ResultOf(&Report{}, nil); r != ResultDeleted {
		t.Errorf("clean report: %s", r)
	}
	if r := ResultOf(nil, fmt.Errorf("resolve: bad")); r != ResultError {
		t.Errorf("no report: %s", r)
	}
	if rec := NewDeleteRecord(nil, nil, ResultRefused, TriggerManual); rec.Steps == nil || rec.Left == nil {
		t.Error("JSON slices must not be null")
	}
}

package deletion

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"

	"golang.org/x/sys/unix"
)

// resolveNS is the namespace of the tests below.
const resolveNS = "robust-resolve"

// userDir makes an operator's directory named id: files of their own, a
// file named options.json and one named runtime (what gc used to take for
// a task directory), and a rootfs/ with data. It returns the directory and
// a check that it is intact.
func userDir(t *testing.T, parent, id string) (string, func() string) {
	t.Helper()
	dir := filepath.Join(parent, id)
	files := map[string]string{
		"index.html":        "<html>the operator's site</html>\n",
		"options.json":      `{"port": 8080}`,
		"runtime":           "node\n",
		"config.json":       `{"ociVersion": "1.0.2"}`,
		"rootfs/etc/passwd": "root:x:0:0::/root:/bin/sh\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, func() string {
		var bad []string
		for name, content := range files {
			if data, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(data) != content {
				bad = append(bad, name)
			}
		}
		return strings.Join(bad, ", ")
	}
}

// stateTaskDir makes <tmp>/io.containerd.runtime.v2.task/<resolveNS>/<id>
// as containerd does (rootfs, the work link, config.json) and returns the
// state directory and the task directory.
func stateTaskDir(t *testing.T, id string) (state, dir string) {
	t.Helper()
	base := t.TempDir()
	state = filepath.Join(base, "state", "io.containerd.runtime.v2.task")
	dir = filepath.Join(state, resolveNS, id)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "root", "io.containerd.runtime.v2.task", resolveNS, id), filepath.Join(dir, "work")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"ociVersion":"1.0.2"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return state, dir
}

// TestByHandTheWorkingDirectoryIsNotTheTask: `cd /srv/web && ... -id web
// delete` by hand, with or without a state directory, must not take the
// working directory for the task directory.
func TestByHandTheWorkingDirectoryIsNotTheTask(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("web")
	for _, tc := range []struct {
		name     string
		stateDir bool
	}{{"with a state directory", true}, {"without a state directory", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir, intact := userDir(t, t.TempDir(), id)
			req := Request{Namespace: resolveNS, ID: id}
			if tc.stateDir {
				req.StateDir = filepath.Join(t.TempDir(), "io.containerd.runtime.v2.task")
			}
			t.Chdir(dir)
			rep, err := Delete(context.Background(), req)
			if bad := intact(); bad != "" {
				t.Fatalf("the operator's working directory was touched (%s); delete returned %v\n%s", bad, err, rep.Text())
			}
			if rep.Bundle == dir {
				t.Errorf("the delete resolved the working directory %s as the task directory", dir)
			}
			if !tc.stateDir && err == nil {
				t.Errorf("a delete by hand without -bundle or a state directory did not fail")
			}
		})
	}
}

// TestTaskDirOnlyContainerdsWorkingDirectory: the working directory stands
// for the task directory only when containerd runs the delete.
func TestTaskDirOnlyContainerdsWorkingDirectory(t *testing.T) {
	cwd := filepath.Join(t.TempDir(), "web")
	if err := os.Mkdir(cwd, 0o755); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	t.Chdir(cwd)
	for _, tc := range []struct {
		name    string
		req     Request
		want    string
		wantErr bool
	}{
		{"by hand: the state directory wins", Request{Namespace: "ns", ID: "web", StateDir: state}, filepath.Join(state, "ns", "web"), false},
		{"by hand, no state directory: error", Request{Namespace: "ns", ID: "web"}, "", true},
		{"by hand: -bundle", Request{Namespace: "ns", ID: "web", Bundle: "/x/ns/web", StateDir: state}, "/x/ns/web", false},
		{"containerd: the working directory", Request{Namespace: "ns", ID: "web", StateDir: state, ByContainerd: true}, cwd, false},
		{"containerd: -bundle", Request{Namespace: "ns", ID: "web", Bundle: "/x/ns/web", ByContainerd: true}, "/x/ns/web", false},
		{"containerd, another id: the state directory", Request{Namespace: "ns", ID: "db", StateDir: state, ByContainerd: true}, filepath.Join(state, "ns", "db"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.req.TaskDir()
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("TaskDir() = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestNoEvidenceNothingTouched: a -bundle (by hand, by gc, or by
// containerd) that is not a runc v2 task directory is refused with
// bundle.ErrNotTaskDir, and nothing in it is touched.
func TestNoEvidenceNothingTouched(t *testing.T) {
	testutil.NeedRoot(t)
	for _, byContainerd := range []bool{false, true} {
		name := "by hand"
		if byContainerd {
			name = "by containerd"
		}
		t.Run(name, func(t *testing.T) {
			id := testutil.RandID("webapp")
			// gc's mistaken --state-dir: <dir>/<x>/<y> of a user's tree.
			dir, intact := userDir(t, filepath.Join(t.TempDir(), resolveNS), id)
			rep, err := Delete(context.Background(), Request{Namespace: resolveNS, ID: id, Bundle: dir, ByContainerd: byContainerd})
			if bad := intact(); bad != "" {
				t.Fatalf("a directory without evidence was touched (%s); delete returned %v\n%s", bad, err, rep.Text())
			}
			if !errors.Is(err, bundle.ErrNotTaskDir) {
				t.Fatalf("delete returned %v; want bundle.ErrNotTaskDir\n%s", err, rep.Text())
			}
			if len(rep.Steps) != 1 || rep.Steps[0].Step != StepResolve || rep.Steps[0].Outcome != OutcomeFailed {
				t.Errorf("steps past resolve ran:\n%s", rep.Text())
			}
		})
	}
}

// TestEvidenceDeletes: a task directory with evidence (containerd's layout,
// or elsewhere with the work link) is deleted as before.
func TestEvidenceDeletes(t *testing.T) {
	testutil.NeedRoot(t)
	t.Run("layout", func(t *testing.T) {
		id := testutil.RandID("task")
		state, dir := stateTaskDir(t, id)
		t.Chdir(t.TempDir())
		rep, err := Delete(context.Background(), Request{Namespace: resolveNS, ID: id, StateDir: state})
		if err != nil {
			t.Fatalf("delete: %v\n%s", err, rep.Text())
		}
		testutil.AssertGone(t, dir)
	})
	t.Run("content", func(t *testing.T) {
		id := testutil.RandID("task")
		dir := filepath.Join(t.TempDir(), resolveNS, id)
		if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/nonexistent/root/io.containerd.runtime.v2.task/"+resolveNS+"/"+id, filepath.Join(dir, "work")); err != nil {
			t.Fatal(err)
		}
		rep, err := Delete(context.Background(), Request{Namespace: resolveNS, ID: id, Bundle: dir})
		if err != nil {
			t.Fatalf("delete: %v\n%s", err, rep.Text())
		}
		testutil.AssertGone(t, dir)
	})
}

// deleteWithin runs Delete and fails the test when it has not returned
// within limit (it is then left running: the old code waited forever).
func deleteWithin(t *testing.T, limit time.Duration, req Request) (*Report, error) {
	t.Helper()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Delete(context.Background(), req)
		done <- result{rep, err}
	}()
	select {
	case r := <-done:
		return r.rep, r.err
	case <-time.After(limit):
		t.Fatalf("delete still running after %s", limit)
		return nil, nil
	}
}

// TestResolveLockIsBounded: a task directory locked by another delete that
// does not end is waited for within the delete's timeout, not forever.
func TestResolveLockIsBounded(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("locked")
	_, dir := stateTaskDir(t, id)
	holder, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := deleteWithin(t, 5*time.Second, Request{Namespace: resolveNS, ID: id, Bundle: dir, Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "held by another delete") {
		t.Fatalf("delete of a locked task directory returned %v; want the lock refused\n%s", err, rep.Text())
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("waited %s for the lock: more than the delete's timeout", took)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Errorf("the locked task directory was touched: %v", err)
	}
}

// TestResolveNeverWaitsOnAFIFO: a FIFO (or anything but a directory) in the
// task directory's place is refused at once, never opened for reading.
func TestResolveNeverWaitsOnAFIFO(t *testing.T) {
	testutil.NeedRoot(t)
	id := testutil.RandID("fifo")
	p := filepath.Join(t.TempDir(), "io.containerd.runtime.v2.task", resolveNS, id)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := deleteWithin(t, 3*time.Second, Request{Namespace: resolveNS, ID: id, Bundle: p})
	if !errors.Is(err, bundle.ErrNotTaskDir) {
		t.Fatalf("delete of a FIFO returned %v; want bundle.ErrNotTaskDir", err)
	}
	if fi, err := os.Lstat(p); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
		t.Errorf("the FIFO was touched: %v", err)
	}
}

// TestResolveLocksThePathsDirectory: while resolve waits, the directory it
// opened is renamed away (containerd's removal) and a new one of the same
// name appears; the lock it ends up holding is the new one's.
func TestResolveLocksThePathsDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "task")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := unix.Flock(int(holder.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.Rename(dir, dir+".old")
		_ = os.Mkdir(dir, 0o700)
		holder.Close()
	}()
	f, err := lockTaskDir(dir, time.Now().Add(2*time.Second))
	if err != nil || f == nil {
		t.Fatalf("lockTaskDir: %v, %v", f, err)
	}
	defer f.Close()
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(dir, &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino {
		t.Fatal("the lock is held on the directory renamed away, not on the path's")
	}
}

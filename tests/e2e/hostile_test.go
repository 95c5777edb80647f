package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// sentinel is something on the host outside every task: a directory of
// files, a file, or a live socket of another process. intact says what of
// it changed ("" when nothing).
type sentinel struct {
	dir, file, sock string
	files           map[string]string
	listener        net.Listener
}

func newSentinel(t *testing.T) *sentinel {
	t.Helper()
	s := &sentinel{dir: t.TempDir(), files: map[string]string{"a.txt": "host data\n", "sub/b.txt": "more host data\n"}}
	for name, content := range s.files {
		p := filepath.Join(s.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.file = filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(s.file, []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A live socket in containerd's shim socket directory, named as shim
	// sockets are: another process's, alive.
	if err := os.MkdirAll("/run/containerd/s", 0o711); err != nil {
		t.Fatal(err)
	}
	s.sock = fmt.Sprintf("/run/containerd/s/%x", sha256.Sum256([]byte(t.Name())))
	_ = os.Remove(s.sock)
	l, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	s.listener = l
	t.Cleanup(func() { l.Close() })
	return s
}

func (s *sentinel) intact() string {
	var bad []string
	for name, content := range s.files {
		if data, err := os.ReadFile(filepath.Join(s.dir, name)); err != nil || string(data) != content {
			bad = append(bad, "host dir file "+name)
		}
	}
	if data, err := os.ReadFile(s.file); err != nil || string(data) != "host file\n" {
		bad = append(bad, "host file")
	}
	if c, err := net.DialTimeout("unix", s.sock, time.Second); err != nil {
		bad = append(bad, "live socket of another process: "+err.Error())
	} else {
		c.Close()
	}
	return strings.Join(bad, ", ")
}

// editRuncState rewrites fields of the container's runc state.json.
func editRuncState(c *harness.Container, set map[string]any) error {
	p := filepath.Join(c.RuncState, "state.json")
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		return err
	}
	for k, v := range set {
		st[k] = v
	}
	if data, err = json.Marshal(st); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o600)
}

// replaceWithSymlink replaces a file of the bundle by a symlink to target.
func replaceWithSymlink(c *harness.Container, name, target string) error {
	p := filepath.Join(c.Bundle, name)
	if err := os.Remove(p); err != nil {
		return err
	}
	return os.Symlink(target, p)
}

// socketFile is the task directory's record of the shim's socket on this
// line: bootstrap.json (2.x) or address (1.6/1.7).
func socketFile(c *harness.Container) string {
	if _, err := os.Stat(filepath.Join(c.Bundle, "bootstrap.json")); err == nil {
		return "bootstrap.json"
	}
	return "address"
}

// pointSocketAt makes the task directory name addr as the shim's socket.
func pointSocketAt(c *harness.Container, addr string) error {
	name := socketFile(c)
	content := "unix://" + addr
	if name == "bootstrap.json" {
		content = fmt.Sprintf(`{"version":3,"address":"unix://%s","protocol":"ttrpc"}`, addr)
	}
	return os.WriteFile(filepath.Join(c.Bundle, name), []byte(content), 0o644)
}

// TestHostileLayouts: the task directory or runc's state of our container
// is made hostile — files and rootfs replaced by symlinks to host paths,
// the socket record naming a host file or a live socket of another
// process, the work link pointing outside containerd's root, runc's state
// naming PID 1 or another container's init with its true start time —
// then the shim is killed and containerd runs our delete (and, after it,
// its own bundle removal). Nothing outside the task's own objects may be
// touched; the container itself must still be cleaned up (its shim's
// socket excepted where the record of it was replaced).
func TestHostileLayouts(t *testing.T) {
	s, ok := shimByName("ours")
	if !ok {
		t.Fatal("ours is not under test")
	}
	type hostile struct {
		name string
		// apply makes the layout hostile; other is a second running
		// container whose processes must survive.
		apply func(c, other *harness.Container, sn *sentinel) error
		// lost is what of the container may stay because its record was
		// replaced: the dead shim's socket (KindSocket) or the work
		// directory (KindWorkDir), reported but not found.
		lost string
	}
	cases := []hostile{
		{name: "rootfs replaced by a symlink to a host dir", apply: func(c, _ *harness.Container, sn *sentinel) error {
			rootfs := filepath.Join(c.Bundle, "rootfs")
			if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
				return err
			}
			if err := os.Remove(rootfs); err != nil {
				return err
			}
			return os.Symlink(sn.dir, rootfs)
		}},
		{name: "config.json, options.json, init.pid, runtime: symlinks to a host file", apply: func(c, _ *harness.Container, sn *sentinel) error {
			for _, f := range []string{"config.json", "options.json", "init.pid", "runtime"} {
				if err := replaceWithSymlink(c, f, sn.file); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
			return nil
		}},
		{name: "socket record names a host file", lost: harness.KindSocket, apply: func(c, _ *harness.Container, sn *sentinel) error {
			return pointSocketAt(c, sn.file)
		}},
		{name: "socket record names a live socket of another process", lost: harness.KindSocket, apply: func(c, _ *harness.Container, sn *sentinel) error {
			return pointSocketAt(c, sn.sock)
		}},
		{name: "socket record is a symlink to a host file", lost: harness.KindSocket, apply: func(c, _ *harness.Container, sn *sentinel) error {
			return replaceWithSymlink(c, socketFile(c), sn.file)
		}},
		{name: "work link points at a host dir", lost: harness.KindWorkDir, apply: func(c, _ *harness.Container, sn *sentinel) error {
			return replaceWithSymlink(c, "work", sn.dir)
		}},
		{name: "runc state names PID 1", apply: func(c, _ *harness.Container, _ *sentinel) error {
			p1, err := harness.RecordProc(1)
			if err != nil {
				return err
			}
			return editRuncState(c, map[string]any{"init_process_pid": 1, "init_process_start": p1.Start})
		}},
		{name: "runc state names another container's init", apply: func(c, other *harness.Container, _ *sentinel) error {
			return editRuncState(c, map[string]any{"init_process_pid": other.Init.Pid, "init_process_start": other.Init.Start})
		}},
		{name: "runc state names another container's init and cgroups", apply: func(c, other *harness.Container, _ *sentinel) error {
			data, err := os.ReadFile(filepath.Join(other.RuncState, "state.json"))
			if err != nil {
				return err
			}
			var st map[string]any
			if err := json.Unmarshal(data, &st); err != nil {
				return err
			}
			return editRuncState(c, map[string]any{"init_process_pid": other.Init.Pid, "init_process_start": other.Init.Start, "cgroup_paths": st["cgroup_paths"]})
		}},
	}
	ctx := context.Background()
	for i, hc := range cases {
		t.Run(hc.name, func(t *testing.T) {
			sn := newSentinel(t)
			// Short ids: runc makes the id the container's hostname (64
			// bytes at most).
			other := startContainer(t, shared, s, caseID(fmt.Sprintf("hostile %d other", i), s.name))
			c := startContainer(t, shared, s, caseID(fmt.Sprintf("hostile %d", i), s.name))
			if err := hc.apply(c, other, sn); err != nil {
				t.Fatalf("make hostile: %v", err)
			}
			_, logOff := shared.LogSince(0)
			if err := c.KillShim(); err != nil {
				t.Fatal(err)
			}
			c.WaitTaskGone(ctx, taskTimeout)
			r := c.WaitClean(ctx, settle, true)
			if hc.lost != "" {
				var keep harness.Residue
				for _, l := range r {
					if l.Kind != hc.lost {
						keep = append(keep, l)
					}
				}
				r = keep
			}
			touched := sn.intact()
			var otherDead []string
			for _, p := range other.Procs {
				if !p.Alive() {
					otherDead = append(otherDead, p.String())
				}
			}
			if p1, err := harness.RecordProc(1); err != nil || p1.Pid != 1 {
				otherDead = append(otherDead, "PID 1")
			}
			cell := outcome(r)
			if touched != "" {
				cell += "; TOUCHED: " + touched
			}
			if len(otherDead) > 0 {
				cell += "; another container's processes killed: " + strings.Join(otherDead, " ")
			}
			results.record("hostile: "+hc.name, s.name, cell)
			if touched != "" {
				t.Errorf("host objects outside the task changed: %s", touched)
			}
			if len(otherDead) > 0 {
				t.Errorf("processes that are not the container's were killed: %v", otherDead)
			}
			checkClean(t, r)
			if t.Failed() {
				log, _ := shared.LogSince(logOff)
				t.Logf("containerd log since the shim was killed:\n%s", log)
			}
		})
	}
}

// shimByName is the shim under test with that name.
func shimByName(name string) (shimUnderTest, bool) {
	for _, s := range shims {
		if s.name == name {
			return s, true
		}
	}
	return shimUnderTest{}, false
}

package deletion

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/procstat"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

// A shim held in uninterruptible sleep (state D) that SIGKILL cannot end,
// on any machine:
//   - with a cgroup v1 freezer: the shim frozen there (the frozen task
//     sleeps in D until thawed);
//   - on a cgroup v2 only machine, where the v2 freezer does not put tasks
//     in D (a v2-frozen task sleeps interruptibly and dies at once of a
//     SIGKILL): FUSE. The shim's main thread looks up a file on a FUSE
//     mount served by this test, which reads the request and never answers.
//     Once the server has read a request, the kernel waits for its answer
//     first interruptibly, then killably, and after a fatal signal
//     uninterruptibly (fs/fuse/dev.c, request_wait_answer: "Either request
//     is already in userspace, or it was forced. Wait it out."): a SIGKILLed
//     shim stays in D until the connection is aborted, which release does
//     (the server closes /dev/fuse).
//
// The v2 shim is this test binary, copied as containerd-shim-runc-v2 (a
// shim binary's name), with a shim's command line, holding the listening
// task socket as fd 3 like testutil.FakeShim's silent mode; dstateVictimEnv
// makes its init (which runs on the main thread: the one /proc/<pid>/stat
// shows) do the lookup.

// dstateVictimEnv names the file the victim looks up.
const dstateVictimEnv = "DELETION_TEST_DSTATE_VICTIM"

func init() {
	if p := os.Getenv(dstateVictimEnv); p != "" {
		// Package initialisation runs locked to the main thread.
		_, err := os.Stat(p)
		fmt.Fprintf(os.Stderr, "dstate victim: the lookup of %s returned: %v\n", p, err)
		os.Exit(3)
	}
}

// uninterruptibleShim starts a shim for testNS/id listening at sock that
// SIGKILL leaves in uninterruptible sleep; release lets it go (it then dies
// of the SIGKILL it got). Cleanup kills and reaps it. It fails the test
// when the machine offers neither way (no v1 freezer, no /dev/fuse).
func uninterruptibleShim(t *testing.T, id, sock string) (sh *exec.Cmd, release func()) {
	t.Helper()
	if freezer := freezerV1Mount(); freezer != "" {
		return frozenShim(t, freezer, id, sock)
	}
	return fuseShim(t, id, sock)
}

// freezerV1Mount is the mount point of the cgroup v1 freezer hierarchy, or
// "" when there is none.
func freezerV1Mount() string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(g) >= 3 && len(f) >= 5 && g[0] == "cgroup" && f[3] == "/" && strings.Contains(","+g[2]+",", ",freezer,") {
			return f[4]
		}
	}
	return ""
}

// frozenShim is a silent fake shim frozen in a v1 freezer cgroup.
func frozenShim(t *testing.T, freezer, id, sock string) (*exec.Cmd, func()) {
	t.Helper()
	sh := fakeShim(t, id, sock, testutil.ShimSilent)
	cg := filepath.Join(freezer, id)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	thaw := func() { _ = os.WriteFile(filepath.Join(cg, "freezer.state"), []byte("THAWED"), 0o644) }
	t.Cleanup(func() {
		thaw()
		_ = sh.Process.Kill()
		_ = sh.Wait()
		_ = os.Remove(cg)
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(sh.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	// A task the freezer reaches in a sleep it cannot freeze in (a fork or
	// an exec under way in the Go runtime's threads) leaves the cgroup
	// FREEZING; the v1 freezer's answer is to write FROZEN again, which
	// tries every task once more (freezer-subsystem.rst). CI saw one
	// attempt stay FREEZING for 5 s on a loaded machine.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := os.WriteFile(filepath.Join(cg, "freezer.state"), []byte("FROZEN"), 0o644); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			state, _ := os.ReadFile(filepath.Join(cg, "freezer.state"))
			if strings.TrimSpace(string(state)) == "FROZEN" {
				return sh, thaw
			}
			time.Sleep(5 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			state, _ := os.ReadFile(filepath.Join(cg, "freezer.state"))
			t.Fatalf("freezer %s: %s after 15 s; its tasks: %s", cg, state, taskStates(sh.Process.Pid))
		}
	}
}

// taskStates is every thread of pid with its state and wait channel, to
// say why a freezer could not freeze it.
func taskStates(pid int) string {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		wchan, _ := os.ReadFile(filepath.Join(dir, e.Name(), "wchan"))
		state := "?"
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			if st, err := procstat.ReadTask(pid, tid); err == nil {
				state = string(st.State)
			}
		}
		fmt.Fprintf(&b, "%s:%s:%s ", e.Name(), state, wchan)
	}
	return b.String()
}

// fuseShim is this test binary as a silent shim whose main thread waits
// for a FUSE answer that never comes.
func fuseShim(t *testing.T, id, sock string) (*exec.Cmd, func()) {
	t.Helper()
	srv, err := serveFUSE(t.TempDir())
	if err != nil {
		t.Fatalf("no cgroup v1 freezer, and no FUSE to hold a process in uninterruptible sleep: %v", err)
	}
	t.Cleanup(srv.abort)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "containerd-shim-runc-v2")
	if err := copyExecutable(self, bin); err != nil {
		t.Fatal(err)
	}
	f := testutil.ListenerFile(t, sock)
	cmd := exec.Command(bin, "-namespace", testNS, "-id", id, "-address", "/run/x.sock")
	cmd.Args[0] = "containerd-shim-runc-v2"
	cmd.Env = append(os.Environ(), dstateVictimEnv+"="+filepath.Join(srv.mnt, fuseVictim))
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		srv.abort()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	select {
	case <-srv.held:
	case <-time.After(10 * time.Second):
		t.Fatalf("the FUSE victim %d never looked up %s (stderr: %s)", cmd.Process.Pid, fuseVictim, stderr.String())
	}
	return cmd, srv.abort
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// fuseVictim is the name whose lookup the server reads and never answers.
const fuseVictim = "held"

// fuseServer is a FUSE file system of an empty root directory, served from
// this process over a raw /dev/fuse (no library): it answers INIT, GETATTR
// and STATFS, ENOENT to lookups, ENOSYS to the rest, and never answers the
// lookup of fuseVictim.
type fuseServer struct {
	fd   int
	mnt  string
	held chan struct{} // closed when the victim's lookup was read
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// FUSE protocol (include/uapi/linux/fuse.h), what this server needs.
const (
	fuseLookup    = 1
	fuseForget    = 2
	fuseGetattr   = 3
	fuseStatfs    = 17
	fuseInit      = 26
	fuseInterrupt = 36
	fuseDestroy   = 38
	fuseBatchFgt  = 42
	fuseInHeader  = 40
	fuseOutHeader = 16
)

func serveFUSE(mnt string) (*fuseServer, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("robust-dstate", mnt, "fuse", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount fuse on %s: %w", mnt, err)
	}
	s := &fuseServer{fd: fd, mnt: mnt, held: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// abort closes /dev/fuse (which aborts the connection: every waiting
// request fails with ENOTCONN) and unmounts; idempotent.
func (s *fuseServer) abort() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		_ = unix.Unmount(s.mnt, unix.MNT_DETACH)
	})
}

func (s *fuseServer) serve() {
	defer close(s.done)
	defer unix.Close(s.fd)
	buf := make([]byte, 1<<20+4096)
	var heldOnce sync.Once
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		// Poll, so that abort never waits on a read that no request ends.
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 100); err != nil || n == 0 {
			continue
		}
		n, err := unix.Read(s.fd, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return // ENODEV: unmounted
		}
		if n < fuseInHeader {
			continue
		}
		req := buf[:n]
		opcode := binary.LittleEndian.Uint32(req[4:])
		unique := binary.LittleEndian.Uint64(req[8:])
		body := req[fuseInHeader:]
		switch opcode {
		case fuseInit:
			out := make([]byte, 64)
			binary.LittleEndian.PutUint32(out[0:], 7)  // major
			binary.LittleEndian.PutUint32(out[4:], 31) // minor
			if len(body) >= 12 {
				copy(out[8:12], body[8:12]) // max_readahead
			}
			binary.LittleEndian.PutUint32(out[20:], 4096) // max_write
			s.reply(unique, 0, out)
		case fuseGetattr:
			out := make([]byte, 104) // fuse_attr_out: valid, nsec, dummy, fuse_attr
			attr := out[16:]
			binary.LittleEndian.PutUint64(attr[0:], 1)                   // ino
			binary.LittleEndian.PutUint32(attr[60:], unix.S_IFDIR|0o755) // mode
			binary.LittleEndian.PutUint32(attr[64:], 2)                  // nlink
			s.reply(unique, 0, out)
		case fuseStatfs:
			out := make([]byte, 80)
			binary.LittleEndian.PutUint32(out[52:], 255) // namelen
			s.reply(unique, 0, out)
		case fuseLookup:
			if name, _, _ := bytes.Cut(body, []byte{0}); string(name) == fuseVictim {
				heldOnce.Do(func() { close(s.held) })
				continue // never answered
			}
			s.reply(unique, -int32(unix.ENOENT), nil)
		case fuseForget, fuseBatchFgt, fuseInterrupt, fuseDestroy:
			// no answer expected (an interrupt of the held lookup is ignored)
		default:
			s.reply(unique, -int32(unix.ENOSYS), nil)
		}
	}
}

func (s *fuseServer) reply(unique uint64, errno int32, body []byte) {
	out := make([]byte, fuseOutHeader+len(body))
	binary.LittleEndian.PutUint32(out[0:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[4:], uint32(errno))
	binary.LittleEndian.PutUint64(out[8:], unique)
	copy(out[fuseOutHeader:], body)
	_, _ = unix.Write(s.fd, out)
}

// TestUninterruptibleShimHelper: whichever way the machine offers, the
// shim it starts survives a SIGKILL in state D and dies once released.
func TestUninterruptibleShimHelper(t *testing.T) {
	testutil.NeedRoot(t)
	ways := []string{"fuse"}
	if freezerV1Mount() != "" {
		ways = append(ways, "freezer-v1")
	}
	for _, way := range ways {
		t.Run(way, func(t *testing.T) {
			id := testutil.RandID("dstate")
			sock := filepath.Join(t.TempDir(), "s")
			var (
				sh      *exec.Cmd
				release func()
			)
			switch way {
			case "freezer-v1":
				sh, release = frozenShim(t, freezerV1Mount(), id, sock)
			case "fuse":
				sh, release = fuseShim(t, id, sock)
			}
			pid := sh.Process.Pid
			if err := sh.Process.Signal(os.Kill); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			if st := procState(pid); st != 'D' {
				t.Fatalf("shim %d after SIGKILL: state %c, want D", pid, st)
			}
			release()
			done := make(chan struct{})
			go func() { _ = sh.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("released shim %d did not die (state %c)", pid, procState(pid))
			}
		})
	}
}

// procState is the state letter of /proc/<pid>/stat, or 0.
func procState(pid int) byte {
	st, err := procstat.Read(pid)
	if err != nil {
		return 0
	}
	return st.State
}

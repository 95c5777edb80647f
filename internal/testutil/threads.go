package testutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// threadedZombieSource is a process whose main thread exits (pthread_exit)
// while a second thread runs forever: /proc/<pid>/stat then shows "Z" for
// the process, which has not exited. The main thread first waits for one
// byte, or EOF, on stdin.
const threadedZombieSource = `#include <pthread.h>
#include <unistd.h>
static void *run(void *a) { for (;;) pause(); return a; }
int main(void) {
	pthread_t t;
	char c;
	if (pthread_create(&t, 0, run, 0) != 0) return 1;
	(void)!read(0, &c, 1);
	pthread_exit(0);
}
`

// BuildThreadedZombie compiles the threaded-zombie program, static (it
// also runs in a busybox container), into dir with gcc and returns its
// path.
func BuildThreadedZombie(t testing.TB, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "threaded-zombie.c")
	bin := filepath.Join(dir, "threaded-zombie")
	if err := os.WriteFile(src, []byte(threadedZombieSource), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", "-static", "-pthread", "-O2", "-o", bin, src).CombinedOutput()
	if err != nil {
		t.Fatalf("build the threaded-zombie helper with gcc (gcc and a static libc are needed): %v\n%s", err, out)
	}
	return bin
}

// StartThreadedZombie starts bin (from BuildThreadedZombie), runs
// prepare(pid) (e.g. to move it into cgroups) while its main thread still
// runs, then lets the main thread exit and waits until /proc shows it: the
// process is "Z" with another thread running. Cleanup kills and reaps it.
func StartThreadedZombie(t testing.TB, bin string, prepare func(pid int)) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	if !Poll(5*time.Second, time.Millisecond, func() bool { n, _ := threadCount(pid); return n == 2 }) {
		t.Fatalf("threaded-zombie %d did not start its second thread", pid)
	}
	if prepare != nil {
		prepare(pid)
	}
	if _, err := io.WriteString(in, "x"); err != nil {
		t.Fatal(err)
	}
	_ = in.Close()
	WaitThreadedZombie(t, pid)
	return cmd
}

// WaitThreadedZombie waits (bounded) until pid's main thread has exited
// while another thread runs.
func WaitThreadedZombie(t testing.TB, pid int) {
	t.Helper()
	if !Poll(5*time.Second, time.Millisecond, func() bool { return ThreadedZombie(pid) }) {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		t.Fatalf("pid %d: main thread did not exit while another runs: %s", pid, st)
	}
}

// ThreadedZombie reports whether pid's main thread has exited ("Z") while
// another thread of it runs.
func ThreadedZombie(pid int) bool {
	n, state := threadCount(pid)
	return state == 'Z' && n > 1
}

// Running reports whether process pid has not exited: it exists and is not
// a zombie, or its main thread is one while other threads run. (Alive
// counts the latter as gone.)
func Running(pid int) bool {
	n, state := threadCount(pid)
	return n > 0 && (n > 1 || (state != 'Z' && state != 'X'))
}

// threadCount returns field 20 (num_threads) and the state of
// /proc/<pid>/stat; 0 when it cannot be read.
func threadCount(pid int) (int, byte) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 18 {
		return 0, 0
	}
	n, err := strconv.Atoi(f[17])
	if err != nil {
		return 0, 0
	}
	return n, f[0][0]
}

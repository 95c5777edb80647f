package liveness

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// Shim is a process proven to be the serving shim of a task.
type Shim struct {
	Pid int
	// Start is the process's start time (field 22 of /proc/<pid>/stat) read
	// before and after the proof: whoever signals it must check it again
	// through a pidfd, so that a reused pid is never signalled.
	Start uint64
	// Proof says why it is the task's shim, e.g. "command line names
	// ns/id; listens on socket /run/containerd/s/ab (inode 4711)".
	Proof string
	// State is the process state at the proof ('S', 'T' for stopped, 'D'
	// for uninterruptible sleep, ...).
	State byte
}

// TaskShims returns the processes proven to be the serving shim of b's
// task, and what was found without proof. A process is proven when all
// hold:
//   - its command line is a shim's naming b's namespace and id (-namespace
//     NS -id ID), and is not a `delete` or `gc`;
//   - its executable is a shim binary and it runs in this process's mount
//     namespace (isRealShim);
//   - it is the process listening on the task's socket (the socket's inode,
//     from /proc/<pid>/net/unix, among its open files), or it is the parent
//     of the container's init as runc's state records it (pid and start
//     time verified).
//
// Its start time is read before and after the proof; a process whose start
// time changed (its pid was reused) is dropped. unproven names every
// process whose command line claims the task without the rest of the
// proof: it must never be signalled. A pod's shim serving several tasks
// under a sandbox id is not the shim of the other tasks: it is not found
// for them. The Prober's list of shim processes is the one taken when it
// was made.
func (p *Prober) TaskShims(b *bundle.Bundle) (proven []Shim, unproven []string) {
	sockPath := ""
	if path, ok := strings.CutPrefix(b.Address, "unix://"); ok {
		sockPath = path
	}
	parent, parentWhy := verifiedInitParent(b)
	for _, s := range p.shims {
		if s.namespace != b.Namespace || s.id != b.ID || !s.serving() {
			continue
		}
		before, err := ReadStat(s.pid)
		if err != nil || before.Exited() {
			continue // gone since the scan
		}
		if !s.real {
			unproven = append(unproven, fmt.Sprintf("process %d has a shim command line for %s/%s but %s: not signalled", s.pid, b.Namespace, b.ID, s.notReal))
			continue
		}
		var proof []string
		if sockPath != "" {
			if ino, ok := listensOn(s.pid, sockPath); ok {
				proof = append(proof, fmt.Sprintf("listens on socket %s (inode %d)", sockPath, ino))
			}
		}
		if parent > 0 && parent == s.pid {
			proof = append(proof, parentWhy)
		}
		if len(proof) == 0 {
			what := "no socket address"
			if sockPath != "" {
				what = "does not listen on socket " + sockPath
			}
			unproven = append(unproven, fmt.Sprintf("process %d has a shim command line for %s/%s but %s and is not the parent of the container's verified init: not signalled", s.pid, b.Namespace, b.ID, what))
			continue
		}
		after, err := ReadStat(s.pid)
		if err != nil || after.Exited() || after.Start != before.Start {
			continue // exited or replaced while it was being checked
		}
		proven = append(proven, Shim{
			Pid:   s.pid,
			Start: before.Start,
			Proof: fmt.Sprintf("command line names %s/%s; %s", b.Namespace, b.ID, strings.Join(proof, "; ")),
			State: after.State,
		})
	}
	return proven, unproven
}

// FindTaskShims is TaskShims on the processes running now. It scans /proc
// only when a shim could be proven at all: a socket listens at the task's
// address in this process's network namespace (containerd runs the delete
// in its own, where it started the shim), or the container's verified init
// has a parent. Otherwise (the usual case: the shim is dead) it returns
// nothing at the cost of one read of /proc/self/net/unix, and claimants
// without proof are not listed either.
func FindTaskShims(b *bundle.Bundle) (proven []Shim, unproven []string) {
	if !mayHaveShim(b) {
		return nil, nil
	}
	return NewProber().TaskShims(b)
}

// mayHaveShim reports whether anything could prove a shim of b's task: a
// listening socket at its address (or a /proc/self/net/unix that cannot be
// read), or a verified init whose parent's command line claims the task (a
// parent that is a subreaper such as tini or a test's supervisor, which
// adopted the init when the shim died, does not: /proc is then not
// scanned).
func mayHaveShim(b *bundle.Bundle) bool {
	if parent, _ := verifiedInitParent(b); parent > 0 {
		args, err := procCmdline(parent)
		switch {
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return true // cannot tell
		case err == nil && isShimCommand(args):
			selfNS, _ := os.Readlink("/proc/self/ns/mnt")
			if sp := parseShimArgs(args[1:]); sp.namespace == b.Namespace && sp.id == b.ID && sp.serving() {
				if real, _ := isRealShim(parent, selfNS); real {
					return true
				}
			}
		}
	}
	path, ok := strings.CutPrefix(b.Address, "unix://")
	if !ok || path == "" {
		return false
	}
	inodes, err := listeningInodes(os.Getpid(), path)
	return err != nil || len(inodes) > 0
}

// verifiedInitParent returns the parent of the container's init when runc's
// state names the init and its start time still matches, else 0.
func verifiedInitParent(b *bundle.Bundle) (int, string) {
	if b.State == nil || b.State.InitProcessPid <= 0 {
		return 0, ""
	}
	pid := b.State.InitProcessPid
	st, err := ReadStat(pid)
	if err != nil || st.Exited() || st.Start != b.State.InitProcessStartTime || st.PPid <= 1 {
		return 0, ""
	}
	return st.PPid, fmt.Sprintf("parent of the container's init %d (start time verified)", pid)
}

// listensOn reports whether pid holds, among its open files, the listening
// unix socket bound at path (as /proc/<pid>/net/unix names it: the path
// given to bind, "@name" for an abstract socket), and its inode. A socket
// another process holds, or a connection accepted from it, is not enough:
// only a listening socket (__SO_ACCEPTCON) bound at path counts.
func listensOn(pid int, path string) (uint64, bool) {
	inodes, err := listeningInodes(pid, path)
	if err != nil || len(inodes) == 0 {
		return 0, false
	}
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		target, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil {
			continue
		}
		n, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64)
		if err == nil && inodes[ino] {
			return ino, true
		}
	}
	return 0, false
}

// soAcceptCon is the kernel's __SO_ACCEPTCON in /proc/net/unix's Flags: the
// socket is listening.
const soAcceptCon = 0x10000

// listeningInodes reads /proc/<pid>/net/unix (pid's network namespace) and
// returns the inodes of the listening sockets bound at path.
func listeningInodes(pid int, path string) (map[uint64]bool, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/unix")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseNetUnix(bufio.NewScanner(f), path), nil
}

// parseNetUnix parses /proc/net/unix lines: "Num RefCount Protocol Flags
// Type St Inode Path"; the path may hold spaces (everything after the
// seventh field).
func parseNetUnix(sc *bufio.Scanner, path string) map[uint64]bool {
	out := map[uint64]bool{}
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f, rest := fieldsThenRest(sc.Text(), 7)
		if len(f) < 7 || rest != path {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 64)
		if err != nil || flags&soAcceptCon == 0 {
			continue
		}
		ino, err := strconv.ParseUint(f[6], 10, 64)
		if err == nil {
			out[ino] = true
		}
	}
	return out
}

// fieldsThenRest splits the first n space-separated fields off line (runs
// of spaces separate them: the kernel pads the inode) and returns them and
// the rest after one separating space, verbatim.
func fieldsThenRest(line string, n int) ([]string, string) {
	var f []string
	rest := line
	for len(f) < n {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			return f, ""
		}
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			return append(f, rest), ""
		}
		f = append(f, rest[:i])
		rest = rest[i+1:]
	}
	return f, rest
}

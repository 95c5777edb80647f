package liveness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// shimPrefix starts the binary name of every containerd shim
// (containerd-shim-runc-v2, containerd-shim-runc-v2-robust, ...).
const shimPrefix = "containerd-shim"

// State is what probing a task's shim found.
type State struct {
	// Alive is true when the shim answers on its socket or is hung there
	// (AskShim), when a shim process for the task holds the task's
	// socket, when the container's verified init is a shim's child, or
	// when liveness could not be ruled out. Only a false Alive allows a
	// delete by hand without -force, or by gc.
	Alive bool
	// Answer is what asking the task's socket found (AskShim).
	Answer Answer
	// Why says what was found, e.g. "socket /run/containerd/s/ab answered
	// containerd.task.v3.Task.Connect (shim pid 4711)".
	Why string
}

// shimProc is one running process with a shim's command line.
type shimProc struct {
	pid       int
	namespace string
	id        string
	action    string // "delete", "start" or "" for the serving shim
	// real is set when the process's executable is a shim binary (its
	// name starts with "containerd-shim") and it runs in this process's
	// mount namespace: only such a process counts as a shim. Anything can
	// give itself a shim's command line; notReal says what it lacks.
	real    bool
	notReal string
}

// serving reports whether the process is (or is becoming) a shim serving
// tasks: not a `delete` of a dead one, nor this binary's `gc`.
func (s shimProc) serving() bool { return s.action != "delete" && s.action != "gc" }

// Prober tells live shims from dead ones. It scans /proc once, when made,
// and asks each shim socket at most once (sandbox members share their
// sandbox's). It is safe for concurrent use.
type Prober struct {
	shims []shimProc

	mu      sync.Mutex
	answers map[string]Answer // by task API version and address
}

// NewProber lists the processes with a shim's command line running now
// (other than this one). A /proc that cannot be read leaves the list
// empty: the socket and init checks still run.
func NewProber() *Prober {
	p := &Prober{answers: map[string]Answer{}}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return p
	}
	self := os.Getpid()
	selfNS, _ := os.Readlink("/proc/self/ns/mnt")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		args, err := procCmdline(pid)
		if err != nil || !isShimCommand(args) {
			continue
		}
		sp := parseShimArgs(args[1:])
		sp.pid = pid
		sp.real, sp.notReal = isRealShim(pid, selfNS)
		p.shims = append(p.shims, sp)
	}
	return p
}

// isRealShim reports whether pid's executable is a shim binary and pid
// runs in the mount namespace selfNS ("" when unknown: then any). A shim
// started by containerd runs its own binary (ours execs upstream's, whose
// name starts the same way), in containerd's mount namespace, which is
// where containerd runs the delete and where an operator runs gc.
func isRealShim(pid int, selfNS string) (bool, string) {
	dir := "/proc/" + strconv.Itoa(pid)
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return false, fmt.Sprintf("its executable cannot be read: %v", err)
	}
	if name := filepath.Base(strings.TrimSuffix(exe, " (deleted)")); !strings.HasPrefix(name, shimPrefix) {
		return false, fmt.Sprintf("its executable %s is not a shim binary", exe)
	}
	if selfNS != "" {
		ns, err := os.Readlink(dir + "/ns/mnt")
		if err != nil {
			return false, fmt.Sprintf("its mount namespace cannot be read: %v", err)
		}
		if ns != selfNS {
			return false, fmt.Sprintf("it runs in another mount namespace (%s)", ns)
		}
	}
	return true, ""
}

// isShimCommand reports whether a command line is a containerd shim's: the
// base name of argv[0] starts with "containerd-shim".
func isShimCommand(args []string) bool {
	return len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), shimPrefix)
}

// shimValueFlags are the shim framework's flags that take a value.
var shimValueFlags = map[string]bool{
	"namespace": true, "id": true, "socket": true, "bundle": true, "address": true,
	"publish-binary": true, "debug-socket": true, "state-dir": true, "format": true,
}

// parseShimArgs reads -namespace, -id and the action (the last positional
// argument) from a shim's arguments (Go flag syntax: -x v, --x v, -x=v).
func parseShimArgs(args []string) shimProc {
	var sp shimProc
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			sp.action = a // the last positional: containerd puts the action last
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		if !hasValue && shimValueFlags[name] && i+1 < len(args) {
			i++
			value = args[i]
		}
		switch name {
		case "namespace":
			sp.namespace = value
		case "id":
			sp.id = value
		}
	}
	return sp
}

// Ask is AskShim with AskTimeout, each address asked once per Prober.
func (p *Prober) Ask(b *bundle.Bundle) Answer {
	key := strconv.Itoa(b.TaskAPI) + " " + b.Address
	p.mu.Lock()
	a, ok := p.answers[key]
	p.mu.Unlock()
	if ok && b.Address != "" {
		return a
	}
	a = AskShim(context.Background(), b, AskTimeout)
	p.mu.Lock()
	p.answers[key] = a
	p.mu.Unlock()
	return a
}

// Probe says whether the shim of the task in b is alive: asked on its
// socket (Ask: it answers, is hung, or cannot be asked), then a shim
// process for namespace/id that holds the task's socket (a socket whose
// file was removed still has its listener; with no address to check, its
// claim is enough), then the parent of the
// container's init (verified by runc's start time; init.pid alone only
// when its parent is a shim of the same namespace). Only a real shim
// counts (isRealShim): a process that merely has a shim's command line
// never makes a task live.
func (p *Prober) Probe(b *bundle.Bundle) State { return p.ProbeAnswered(b, p.Ask(b)) }

// ProbeAnswered is Probe with the socket's answer a already in hand (from
// AskShim, e.g. asked by the delete under the task directory's lock): the
// socket is not asked again, and a is not cached. An a that is not
// ShimDead makes the task alive, as in Probe.
func (p *Prober) ProbeAnswered(b *bundle.Bundle, a Answer) State {
	if a.Verdict != ShimDead {
		why := a.Why
		if a.Verdict == ShimHung {
			why += " (hung: only containerd's delete or -force kills it)"
		}
		return State{Alive: true, Answer: a, Why: why}
	}
	why := []string{a.Why}
	path, _ := strings.CutPrefix(b.Address, "unix://")
	for _, s := range p.shims {
		if s.namespace != b.Namespace || s.id != b.ID || !s.serving() || !s.real {
			continue
		}
		if path == "" {
			// No address to hold it to: a real shim's claim is enough.
			return State{Alive: true, Answer: a, Why: fmt.Sprintf("shim process %d runs for %s/%s (no shim address to check it against)", s.pid, b.Namespace, b.ID)}
		}
		if ino, ok := listensOn(s.pid, path); ok {
			return State{Alive: true, Answer: a, Why: fmt.Sprintf("shim process %d runs for %s/%s and holds the task's socket %s (inode %d)", s.pid, b.Namespace, b.ID, path, ino)}
		}
	}
	why = append(why, fmt.Sprintf("no shim process for %s/%s holds its socket", b.Namespace, b.ID))
	if b.State != nil && b.State.InitProcessPid > 0 {
		pid := b.State.InitProcessPid
		st, err := ReadStat(pid)
		if err == nil && !st.Exited() && st.Start == b.State.InitProcessStartTime {
			if shim := p.ShimPid(st.PPid, ""); shim > 0 {
				return State{Alive: true, Answer: a, Why: fmt.Sprintf("container init %d is the child of shim process %d", pid, shim)}
			}
			why = append(why, fmt.Sprintf("container init %d is an orphan", pid))
		}
	} else if b.InitPid > 0 {
		st, err := ReadStat(b.InitPid)
		if err == nil && !st.Exited() {
			if shim := p.ShimPid(st.PPid, b.Namespace); shim > 0 {
				return State{Alive: true, Answer: a, Why: fmt.Sprintf("init.pid %d is the child of shim process %d of namespace %s", b.InitPid, shim, b.Namespace)}
			}
		}
	}
	return State{Answer: a, Why: strings.Join(why, "; ")}
}

// ShimPid returns pid when it is a real, serving shim process (of
// namespace ns unless ns is ""), else 0.
func (p *Prober) ShimPid(pid int, ns string) int {
	for _, s := range p.shims {
		if s.pid == pid && s.real && s.serving() && (ns == "" || s.namespace == ns) {
			return pid
		}
	}
	return 0
}

package liveness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/bundle"
)

// shimProbeTimeout bounds the connect to a shim's socket. A unix socket
// connect is accepted into the backlog or refused at once; this only
// guards against a wedged kernel path.
const shimProbeTimeout = 500 * time.Millisecond

// shimPrefix starts the binary name of every containerd shim
// (containerd-shim-runc-v2, containerd-shim-runc-v2-robust, ...).
const shimPrefix = "containerd-shim"

// State is what probing a task's shim found.
type State struct {
	// Alive is true when the shim answers on its socket, when a shim
	// process for the task runs, when the container's verified init is a
	// shim's child, or when liveness could not be ruled out (a connect
	// that neither succeeds nor is refused). Only a false Alive allows a
	// delete by hand without -force, or by gc.
	Alive bool
	// Why says what was found, e.g. "socket /run/containerd/s/ab accepts
	// connections" or "socket ... refuses connections; no shim process
	// for ns/id".
	Why string
}

// shimProc is one running shim process, from its command line.
type shimProc struct {
	pid       int
	namespace string
	id        string
	action    string // "delete", "start" or "" for the serving shim
}

// serving reports whether the process is (or is becoming) a shim serving
// tasks: not a `delete` of a dead one, nor this binary's `gc`.
func (s shimProc) serving() bool { return s.action != "delete" && s.action != "gc" }

// Prober tells live shims from dead ones. It scans /proc once, when made.
type Prober struct {
	shims []shimProc
}

// NewProber lists the shim processes running now (other than this one).
// A /proc that cannot be read leaves the list empty: the socket and init
// checks still run.
func NewProber() *Prober {
	p := &Prober{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return p
	}
	self := os.Getpid()
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
		p.shims = append(p.shims, sp)
	}
	return p
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

// Probe says whether the shim of the task in b is alive: its socket (from
// `address`), then a shim process for namespace/id that is not a delete,
// then the parent of the container's init (verified by runc's start time;
// init.pid alone only when its parent is a shim of the same namespace).
func (p *Prober) Probe(b *bundle.Bundle) State {
	var why []string
	if b.Address != "" {
		alive, what := probeSocket(b.Address)
		if alive {
			return State{Alive: true, Why: what}
		}
		why = append(why, what)
	} else {
		why = append(why, "no shim address")
	}
	for _, s := range p.shims {
		if s.namespace == b.Namespace && s.id == b.ID && s.serving() {
			return State{Alive: true, Why: fmt.Sprintf("shim process %d runs for %s/%s", s.pid, b.Namespace, b.ID)}
		}
	}
	why = append(why, fmt.Sprintf("no shim process for %s/%s", b.Namespace, b.ID))
	if b.State != nil && b.State.InitProcessPid > 0 {
		pid := b.State.InitProcessPid
		st, err := ReadStat(pid)
		if err == nil && !st.Exited() && st.Start == b.State.InitProcessStartTime {
			if shim := p.ShimPid(st.PPid, ""); shim > 0 {
				return State{Alive: true, Why: fmt.Sprintf("container init %d is the child of shim process %d", pid, shim)}
			}
			why = append(why, fmt.Sprintf("container init %d is an orphan", pid))
		}
	} else if b.InitPid > 0 {
		st, err := ReadStat(b.InitPid)
		if err == nil && !st.Exited() {
			if shim := p.ShimPid(st.PPid, b.Namespace); shim > 0 {
				return State{Alive: true, Why: fmt.Sprintf("init.pid %d is the child of shim process %d of namespace %s", b.InitPid, shim, b.Namespace)}
			}
		}
	}
	return State{Why: strings.Join(why, "; ")}
}

// ShimPid returns pid when it is a serving shim process (of namespace ns
// unless ns is ""), else 0.
func (p *Prober) ShimPid(pid int, ns string) int {
	for _, s := range p.shims {
		if s.pid == pid && s.serving() && (ns == "" || s.namespace == ns) {
			return pid
		}
	}
	return 0
}

// probeSocket connects to a shim's ttrpc address ("unix://PATH", or an
// abstract "unix://@name"). It returns alive and what it found: a connect
// that succeeds is alive; one refused (ECONNREFUSED, EPROTOTYPE, also a
// file that is not a socket) or a missing socket is dead; anything else
// (timeout, EAGAIN on a full backlog, EACCES) cannot rule out a live shim
// and counts as alive.
func probeSocket(address string) (bool, string) {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok || path == "" {
		return false, fmt.Sprintf("shim address %q is not unix://PATH", address)
	}
	switch state, err := bundle.ProbeSocket(path, shimProbeTimeout); state {
	case bundle.SocketLive:
		return true, fmt.Sprintf("socket %s accepts connections", path)
	case bundle.SocketMissing:
		return false, fmt.Sprintf("socket %s is missing", path)
	case bundle.SocketDead:
		return false, fmt.Sprintf("socket %s refuses connections", path)
	default:
		return true, fmt.Sprintf("cannot tell whether socket %s is live: %v", path, err)
	}
}

// Stat is what the liveness checks read from /proc/<pid>/stat.
type Stat struct {
	State byte
	PPid  int
	Start uint64 // field 22, clock ticks since boot, as runc records it
}

// Exited reports a zombie or a dead process.
func (s Stat) Exited() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// ReadStat parses /proc/<pid>/stat; the comm field may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return Stat{}, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: ppid: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("stat of pid %d: start time: %w", pid, err)
	}
	return Stat{State: f[0][0], PPid: ppid, Start: start}, nil
}

// procCmdline is /proc/<pid>/cmdline split at NULs.
func procCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

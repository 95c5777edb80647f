// Package liveness owns one question: is a task's shim alive? It asks the
// shim: a connect to the task's socket and one call of the task API
// (Connect, v2 or v3, over ttrpc) within AskTimeout (AskShim). The answer
// is one of: dead (nothing listens), hung (accepted, no answer), answers
// (alive, whatever the call returned), or unknown (counts as alive).
//
// A delete containerd runs never signals a shim that answers: containerd 2.x
// runs `delete` for a pod's sandbox while the sandbox's shim serves the
// pod's other containers (ask.go). A delete by hand without -force and gc
// touch only tasks whose shim Prober.Probe calls dead (ProbeAnswered when
// the delete has asked the socket itself, under the task's lock): the
// socket's answer, then the processes that are shims (their executable is a
// shim binary, in this mount namespace) holding the task's socket, then
// whether the container's verified init is such a shim's child; anything it
// cannot rule out counts as alive. It also finds, with proof, the process
// that is a task's shim (Prober.TaskShims: a real shim whose command line
// names the task, listening on the task's socket or the parent of the
// container's verified init), for the delete path to kill a hung shim.
//
// A process's state, parent and start time are read through package
// internal/procstat (ReadStat and Stat are that package's, kept here for
// the callers of this one); liveness parses no /proc/<pid>/stat itself.
//
// It never signals a process, never removes anything and never reads a task
// directory itself (it is handed a loaded bundle.Bundle).
package liveness

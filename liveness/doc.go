// Package liveness owns one question: is a task's shim alive? It connects
// to the shim's socket, lists the shim processes running now from their
// command lines, and checks whether the container's verified init is a
// shim's child. A delete by hand without -force and gc touch only tasks
// whose shim it calls dead; anything it cannot rule out counts as alive.
// It also finds, with proof, the process that is a task's shim
// (Prober.TaskShims: its command line names the task, and it listens on the
// task's socket or is the parent of the container's verified init), for the
// delete path to kill a hung shim containerd has declared dead.
//
// It never signals a process, never removes anything and never reads a task
// directory itself (it is handed a loaded bundle.Bundle).
package liveness

// Package procstat owns one file: /proc/<pid>/stat (and a thread's
// /proc/<pid>/task/<tid>/stat). It is the one reader and parser of that
// file in this module: package liveness (ReadStat, Stat) and package
// cgroups read a process's state, parent, flags, thread count and start
// time through it.
//
// The comm field (field 2) is whatever the process set (up to 15 bytes,
// spaces and parentheses included), so the fields are counted from the
// last ')' of the line: a process cannot pass for another by its name.
//
// It never signals, waits for or otherwise touches a process, and never
// decides what a state means for the delete path: Zombie, Exited and Dying
// say what the kernel reported, the callers decide what to do with it.
package procstat

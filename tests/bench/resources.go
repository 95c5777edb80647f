package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What one running container of the benchmark costs the machine, kept
// generous: a shim (~10–15 MiB resident, ~10 threads), four busybox
// processes, and room for containerd, runc and the harness.
const (
	memPerContainerKiB = 48 << 10
	memReserveKiB      = 1 << 20
	tasksPerContainer  = 24
	tasksReserve       = 2000
)

// resources is the machine's memory and task (pid) use at one moment.
type resources struct {
	MemAvailableMiB int `json:"mem_available_mib"`
	Tasks           int `json:"tasks"`
	PidMax          int `json:"pid_max"`
}

// sampleResources reads MemAvailable, the number of tasks (threads) of
// every process, and pid_max.
func sampleResources() resources {
	avail, _ := strconv.Atoi(strings.TrimSuffix(meminfo("MemAvailable"), " kB"))
	pidMax, _ := readInt("/proc/sys/kernel/pid_max")
	return resources{MemAvailableMiB: avail >> 10, Tasks: countTasks(), PidMax: pidMax}
}

// checkResources fails when n more containers would not fit in the free
// memory or the free pids (pid_max, threads-max, and the pids cgroup of
// this process), with a margin.
func checkResources(n int) error {
	r := sampleResources()
	if need := (n*memPerContainerKiB + memReserveKiB) >> 10; r.MemAvailableMiB < need {
		return fmt.Errorf("%d containers need ~%d MiB, only %d MiB available", n, need, r.MemAvailableMiB)
	}
	limit := r.PidMax
	if tm, err := readInt("/proc/sys/kernel/threads-max"); err == nil && tm < limit {
		limit = tm
	}
	if pl, ok := pidsCgroupRoom(); ok && r.Tasks+pl < limit {
		limit = r.Tasks + pl
	}
	if need := n*tasksPerContainer + tasksReserve; limit-r.Tasks < need {
		return fmt.Errorf("%d containers need ~%d free pids, only %d of %d free", n, need, limit-r.Tasks, limit)
	}
	return nil
}

// pidsCgroupRoom is how many more tasks the pids cgroup (v1) of this
// process allows, when it has a limit.
func pidsCgroupRoom() (int, bool) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 || f[1] != "pids" {
			continue
		}
		dir := filepath.Join("/sys/fs/cgroup/pids", f[2])
		max, err := os.ReadFile(filepath.Join(dir, "pids.max"))
		if err != nil || strings.TrimSpace(string(max)) == "max" {
			return 0, false
		}
		lim, err1 := strconv.Atoi(strings.TrimSpace(string(max)))
		cur, err2 := readInt(filepath.Join(dir, "pids.current"))
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return lim - cur, true
	}
	return 0, false
}

func countTasks() int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		if ts, err := os.ReadDir(filepath.Join("/proc", p.Name(), "task")); err == nil {
			n += len(ts)
		}
	}
	return n
}

func readInt(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// machine is where a run happened.
type machine struct {
	Hostname string `json:"hostname"`
	NProc    int    `json:"nproc"`
	Kernel   string `json:"kernel"`
	OS       string `json:"os"`
	Runc     string `json:"runc"`
	Cgroups  string `json:"cgroups"`
	Go       string `json:"go"`
	MemTotal string `json:"mem_total"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end:
	// the machine is shared, the figures are only as quiet as it was.
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
	// Load is /proc/loadavg at the start of every phase, and LoadMax the
	// highest 1-minute figure seen then.
	Load    []loadSample `json:"loadavg_by_phase"`
	LoadMax float64      `json:"loadavg_1min_max"`
}

// loadSample is /proc/loadavg when a phase started.
type loadSample struct {
	Phase string `json:"phase"`
	At    string `json:"at"`
	Load  string `json:"loadavg"`
}

// markLoad records the load average as phase starts.
func (m *machine) markLoad(phase string) {
	l := loadavg()
	m.Load = append(m.Load, loadSample{Phase: phase, At: time.Now().UTC().Format("15:04:05"), Load: l})
	if f := strings.Fields(l); len(f) > 0 {
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > m.LoadMax {
			m.LoadMax = v
		}
	}
}

// describeMachine collects what can be known before any daemon runs.
func describeMachine() machine {
	var u unix.Utsname
	_ = unix.Uname(&u)
	host, _ := os.Hostname()
	return machine{
		Hostname:   host,
		NProc:      runtime.NumCPU(),
		Kernel:     unix.ByteSliceToString(u.Release[:]),
		OS:         osRelease(),
		Runc:       firstLine(exec.Command("runc", "--version")),
		Cgroups:    cgroupMode(),
		Go:         runtime.Version(),
		MemTotal:   meminfo("MemTotal"),
		LoadBefore: loadavg(),
	}
}

func osRelease() string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "unknown"
}

func firstLine(cmd *exec.Cmd) string {
	cmd.Env = append(os.Environ(), "PATH="+harness.SearchPath())
	if p, err := harness.FindTool(cmd.Args[0]); err == nil {
		cmd.Path = p
	}
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// cgroupMode is "v2" (unified), "v1 hybrid" (v1 with a cgroup2 mount at
// /sys/fs/cgroup/unified) or "v1".
func cgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v1 hybrid"
	}
	return "v1"
}

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// meminfo is one field of /proc/meminfo as written there ("24684808 kB").
func meminfo(key string) string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

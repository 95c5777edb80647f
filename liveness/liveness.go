package liveness

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/procstat"
)

// Stat is what the liveness checks read from /proc/<pid>/stat: the
// state, the parent (PPid), the thread count and the start time (Start,
// clock ticks since boot, as runc records it), with Exited (a zombie or
// dead process; a zombie main thread with other threads running has not
// exited). It is procstat.Stat, the module's one parse of that file.
type Stat = procstat.Stat

// ReadStat reads /proc/<pid>/stat through package procstat; the comm
// field may hold spaces and parentheses, so fields are counted from the
// last ')'. A missing process is an error wrapping fs.ErrNotExist.
func ReadStat(pid int) (Stat, error) { return procstat.Read(pid) }

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

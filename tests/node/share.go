package node

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// NodeShare is where the node mounts the share.
const NodeShare = "/share"

// NodeBin is where suite.sh copies the share's bin/ on the node's own disk
// before the first step: binaries run from local disk, not over 9p.
const NodeBin = "/opt/robust"

// Share is the host directory the node mounts at NodeShare: bin/ (copied to
// NodeBin at the start), suite.sh, and out/ (console.log, status, steps/,
// and whatever the steps write there).
type Share struct {
	Dir string
}

// NewShare makes an empty share below parent ("" = os.TempDir()).
func NewShare(parent string) (*Share, error) {
	dir, err := os.MkdirTemp(parent, "robust-node-share-")
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"bin", "out/steps"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &Share{Dir: dir}, nil
}

// Install copies src into the share's bin/ as name (which may hold
// slashes); the node finds it at NodeBin/name.
func (s *Share) Install(name, src string) error {
	dst := filepath.Join(s.Dir, "bin", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s in the share: %w", name, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("install %s in the share: %w", name, err)
	}
	return out.Close()
}

// WriteBin writes an executable script or file into the share's bin/.
func (s *Share) WriteBin(name string, data []byte) error {
	dst := filepath.Join(s.Dir, "bin", name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// Out is a path below the share's out/ on the host.
func (s *Share) Out(elem ...string) string {
	return filepath.Join(append([]string{s.Dir, "out"}, elem...)...)
}

// Close removes the share.
func (s *Share) Close() error { return os.RemoveAll(s.Dir) }

// Step is one command the suite runs inside the node, as root, from Dir,
// with Env added to the unit's environment, killed after Timeout.
type Step struct {
	Name    string // [a-z0-9.-]: names its status file and its out/ directory
	Dir     string // working directory inside the node
	Env     []string
	Args    []string
	Timeout time.Duration
}

// Suite is what one boot runs: Steps one after another (all of them, even
// after a failure), each one's output on the console.
type Suite struct {
	Name  string
	Steps []Step
	// Timeout bounds the whole boot, from QEMU's start to its exit.
	Timeout time.Duration
}

// StepResult is what a step left: its exit status and how long it took.
type StepResult struct {
	Exit    int
	Seconds float64
	Ran     bool // false: the node never got to it (no status file)
}

// shq quotes s for the shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// suiteMarker starts the first line suite.sh prints: the boot reached the suite.
const suiteMarker = "=== node: suite "

// script renders suite.sh: the node's facts to out/facts, the share's bin/
// to NodeBin, then every step with its status in out/steps/NAME.
func (su Suite) script() string {
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/bash
# Written by tests/node for suite %[1]s; run by robust-suite.service.
set -u
echo "%[2]s%[1]s started at uptime $(cut -d' ' -f1 /proc/uptime) s"
{
	echo "uptime_at_suite=$(cut -d' ' -f1 /proc/uptime)"
	echo "kernel=$(uname -r)"
	echo "systemd=$(systemctl --version | head -n1)"
	echo "pid1=$(cat /proc/1/comm)"
	echo "cgroupfs=$(stat -f -c %%T /sys/fs/cgroup)"
	echo "controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
	echo "subtree_control=$(cat /sys/fs/cgroup/cgroup.subtree_control)"
	echo "containerd=$(containerd --version)"
	echo "runc=$(runc --version | head -n1)"
	echo "cpus=$(nproc)"
	echo "memory=$(free -m | awk '/Mem:/ {print $2}') MiB"
} >/share/out/facts 2>&1
cat /share/out/facts
rm -rf %[3]s && mkdir -p %[3]s && cp -a /share/bin/. %[3]s/ || { echo "FATAL: cannot copy the share's bin/ to %[3]s"; exit 1; }
status=0
`, su.Name, suiteMarker, NodeBin)
	for _, st := range su.Steps {
		timeout := int(st.Timeout / time.Second)
		if timeout <= 0 {
			timeout = 1800
		}
		var env strings.Builder
		for _, e := range st.Env {
			env.WriteString(" " + shq(e))
		}
		var args strings.Builder
		for _, a := range st.Args {
			args.WriteString(" " + shq(a))
		}
		fmt.Fprintf(&b, `
echo "=== node step %[1]s (uptime $(cut -d' ' -f1 /proc/uptime) s)"
mkdir -p /share/out/%[1]s
t0=$(date +%%s.%%N)
( mkdir -p %[2]s && cd %[2]s && exec env%[3]s timeout --kill-after=30 %[4]d%[5]s ) </dev/null
s=$?
t1=$(date +%%s.%%N)
el=$(echo "$t1 - $t0" | awk '{print $1 - $3}')
echo "$s $el" >/share/out/steps/%[1]s
echo "=== node step %[1]s: exit $s in ${el} s"
[ "$s" = 0 ] || status=1
`, st.Name, shq(st.Dir), env.String(), timeout, args.String())
	}
	// What suites write below the repository (tests/systemd's table).
	fmt.Fprintf(&b, "\n[ -d %[1]s/repo/tests/out ] && cp -a %[1]s/repo/tests/out /share/out/repo-tests-out\n", NodeBin)
	b.WriteString("\necho \"=== node: suite done, status $status (uptime $(cut -d' ' -f1 /proc/uptime) s)\"\nexit $status\n")
	return b.String()
}

// readSteps reads out/steps/*: "EXIT SECONDS" per step.
func (s *Share) readSteps(su Suite) map[string]StepResult {
	res := map[string]StepResult{}
	for _, st := range su.Steps {
		data, err := os.ReadFile(s.Out("steps", st.Name))
		if err != nil {
			res[st.Name] = StepResult{Exit: -1}
			continue
		}
		f := strings.Fields(string(data))
		r := StepResult{Exit: -1, Ran: true}
		if len(f) > 0 {
			r.Exit, _ = strconv.Atoi(f[0])
		}
		if len(f) > 1 {
			r.Seconds, _ = strconv.ParseFloat(f[1], 64)
		}
		res[st.Name] = r
	}
	return res
}

// ReadFacts reads out/facts (key=value per line).
func (s *Share) ReadFacts() map[string]string {
	facts := map[string]string{}
	data, _ := os.ReadFile(s.Out("facts"))
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			facts[k] = v
		}
	}
	return facts
}

// SortedKeys returns m's keys in order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

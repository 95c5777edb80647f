package v2

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

type shimUnderTest struct {
	name     string
	runtime  string
	asserted bool
}

var (
	env       harness.E2EEnv
	shared    *harness.Daemon
	namespace = fmt.Sprintf("v2-%d", os.Getpid())
	shims     = []shimUnderTest{
		{name: "upstream", runtime: harness.RuntimeUpstream},
		{name: "ours", runtime: harness.RuntimeRobust, asserted: true},
	}
	table = struct {
		sync.Mutex
		rows map[string]map[string][]string // case -> shim -> findings
	}{rows: map[string]map[string][]string{}}
)

func TestMain(m *testing.M) {
	if err := setUp(); err != nil {
		fmt.Fprintf(os.Stderr, "\n*** V2 SUITE CANNOT RUN: %v\n*** (this is a failure, not a skip; the suite runs in the production node: make node)\nFAIL\n", err)
		os.Exit(2)
	}
	code := m.Run()
	if err := writeTable(); err != nil {
		fmt.Fprintf(os.Stderr, "v2 table: %v\n", err)
		code = 1
	}
	if err := shared.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the daemon: %v\n", err)
	}
	_ = os.Remove(filepath.Join(harness.DefaultRuncRoot, namespace))
	_ = harness.RemoveNamespaceCgroups(namespace)
	os.Exit(code)
}

func setUp() error {
	var err error
	if env, err = harness.FindE2EEnv("runc", "mount", "umount", "systemctl"); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("/sys/fs/cgroup is not the unified cgroup v2 hierarchy (statfs type %#x, %v)", st.Type, err)
	}
	if exe, _ := os.Readlink("/proc/1/exe"); !strings.Contains(exe, "systemd") {
		return fmt.Errorf("PID 1 is %q, not systemd", exe)
	}
	ctrl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil || !hasWords(string(ctrl), "memory", "pids") {
		return fmt.Errorf("the cgroup2 root offers %q (%v): want memory and pids", ctrl, err)
	}
	if err := harness.CheckBinaries(
		harness.Binary{What: "our shim", Path: env.Ours, Hint: "make build"},
		harness.Binary{What: "upstream shim", Path: env.Upstream, Hint: "the containerd line's containerd-shim-runc-v2"},
	); err != nil {
		return err
	}
	shared, err = harness.StartDaemon(context.Background(), harness.DaemonConfig{Binary: env.Containerd,
		Shims: map[string]string{harness.RuntimeRobust: env.Ours, harness.RuntimeUpstream: env.Upstream}})
	if err != nil {
		return err
	}
	fmt.Printf("v2: containerd %s, cgroup driver %s, namespace %s\n", shared.Version, harness.CgroupDriver(), namespace)
	return nil
}

func hasWords(s string, words ...string) bool {
	f := strings.Fields(s)
	for _, w := range words {
		found := false
		for _, x := range f {
			found = found || x == w
		}
		if !found {
			return false
		}
	}
	return true
}

// note records a finding of one case for one shim; for ours a finding that
// is a failure fails the test, for upstream it is only recorded.
func note(t *testing.T, s shimUnderTest, caseName string, ok bool, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	mark := "ok"
	if !ok {
		mark = "NO"
	}
	table.Lock()
	if table.rows[caseName] == nil {
		table.rows[caseName] = map[string][]string{}
	}
	table.rows[caseName][s.name] = append(table.rows[caseName][s.name], mark+": "+msg)
	table.Unlock()
	switch {
	case ok:
		t.Logf("%s: ok: %s", s.name, msg)
	case s.asserted:
		t.Errorf("%s: NO: %s", s.name, msg)
	default:
		t.Logf("%s (not asserted): NO: %s", s.name, msg)
	}
}

func writeTable() error {
	table.Lock()
	defer table.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "### v2 cases: containerd %s, cgroup driver %s\n\n| case | upstream | ours |\n|---|---|---|\n", shared.Version, harness.CgroupDriver())
	cases := make([]string, 0, len(table.rows))
	for c := range table.rows {
		cases = append(cases, c)
	}
	sort.Strings(cases)
	for _, c := range cases {
		cell := func(s string) string {
			return strings.ReplaceAll(strings.Join(table.rows[c][s], "<br>"), "|", `\|`)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c, cell("upstream"), cell("ours"))
	}
	fmt.Print("\n" + b.String())
	out := harness.EnvOr("E2E_OUT", filepath.Join(env.RepoRoot, "tests", "out"))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "v2-side-by-side.md"), []byte(b.String()), 0o644)
}

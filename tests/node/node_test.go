package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/node"
)

// What `make node` runs, each narrowed for development by an environment
// variable (comma-separated; a narrowed run is announced loudly):
//
//	NODE_LINES    containerd lines, one boot each: 1.6 (Debian's, in the
//	              image), 2.4 (bin/containerd-2.4, copied in)
//	NODE_DRIVERS  runc's cgroup drivers: cgroupfs, systemd
//	NODE_SUITES   suites run in each boot: e2e (tests/e2e), interrupt
//	              (tests/interrupt), v2 (tests/node/v2), deletion
//	              (the deletion package's unit tests), systemd
//	              (tests/systemd: its private systemd inside the node)
var (
	allLines   = []string{"1.6", "2.4"}
	allDrivers = []string{"cgroupfs", "systemd"}
	allSuites  = []string{"e2e", "interrupt", "v2", "deletion", "systemd"}
)

// testBinaries are the test binaries cross-built on the host (static, no
// cgo) and run inside the node, by suite.
var testBinaries = map[string]string{
	"e2e":       "./tests/e2e",
	"interrupt": "./tests/interrupt",
	"v2":        "./tests/node/v2",
	"deletion":  "./deletion",
	"systemd":   "./tests/systemd",
}

// once: the suite runs in one boot only, the last line's (deletion's tests
// need no containerd; tests/systemd runs 1.6 and 2.4 itself).
var once = map[string]bool{"deletion": true, "systemd": true}

// perDriver: the suite runs once per cgroup driver (the others once a boot).
var perDriver = map[string]bool{"e2e": true, "interrupt": true, "v2": true}

// suiteArgs are a suite's extra test flags: of the deletion package's unit
// tests (which run on the host in `make unit`) only those a v2-only node
// changes: the shim held in uninterruptible sleep.
var suiteArgs = map[string][]string{
	"deletion": {"-test.run", "^(TestUninterruptibleShimHelper|TestDeleteShimUninterruptible)$"},
}

func selected(t *testing.T, env string, all []string) []string {
	v := os.Getenv(env)
	if v == "" {
		return all
	}
	fmt.Fprintf(os.Stderr, "*** %s=%s: NOT the whole node run (all: %s)\n", env, v, strings.Join(all, ","))
	var out []string
	for _, s := range strings.Split(v, ",") {
		ok := false
		for _, a := range all {
			ok = ok || a == s
		}
		if !ok {
			t.Fatalf("%s: unknown %q (known: %s)", env, s, strings.Join(all, ","))
		}
		out = append(out, s)
	}
	return out
}

// run runs a host command in dir, failing the test with its output.
func run(t *testing.T, dir string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the node suite needs root (it builds the image with debootstrap)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("qemu-system-x86_64 not found (run tests/node/deps.sh or `make node-deps`)")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	lines := selected(t, "NODE_LINES", allLines)
	drivers := selected(t, "NODE_DRIVERS", allDrivers)
	suites := selected(t, "NODE_SUITES", allSuites)
	ctx := context.Background()
	// NODE_RUN and NODE_TEST_TIMEOUT narrow a development run.
	var devArgs []string
	if r := os.Getenv("NODE_RUN"); r != "" {
		fmt.Fprintf(os.Stderr, "*** NODE_RUN=%s: NOT every test of the suites\n", r)
		devArgs = []string{"-test.run", r}
	}
	testTimeout := "38m"
	if v := os.Getenv("NODE_TEST_TIMEOUT"); v != "" {
		testTimeout = v
	}

	t0 := time.Now()
	img, err := node.BuildImage(ctx, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node image %s (%s): %v", img.Dir, time.Since(t0).Round(time.Second), img.Versions)

	// Everything the node runs that is built here.
	ours := filepath.Join(repo, "bin/containerd-shim-runc-v2-robust")
	if err := exec.Command("test", "-x", ours).Run(); err != nil {
		t.Fatalf("our shim %s is not built (make build)", ours)
	}
	build := t.TempDir()
	t1 := time.Now()
	static := []string{"CGO_ENABLED=0"}
	run(t, repo, static, "go", "build", "-tags", "failpoint", "-trimpath", "-o", filepath.Join(build, "prebuilt/shim-failpoint"), "./cmd/containerd-shim-runc-v2-robust")
	run(t, repo, static, "go", "build", "-o", filepath.Join(build, "prebuilt/fakeshim"), "./internal/fakeshim")
	for _, s := range suites {
		run(t, repo, static, "go", "test", "-c", "-o", filepath.Join(build, "tests", s+".test"), testBinaries[s])
	}
	t.Logf("host builds: %s", time.Since(t1).Round(time.Second))

	var report []string
	for _, line := range lines {
		t.Run("containerd-"+line, func(t *testing.T) {
			share, err := node.NewShare("")
			if err != nil {
				t.Fatal(err)
			}
			defer share.Close()
			installs := map[string]string{
				"repo/bin/containerd-shim-runc-v2-robust": ours,
				"prebuilt/shim-failpoint":                 filepath.Join(build, "prebuilt/shim-failpoint"),
				"prebuilt/fakeshim":                       filepath.Join(build, "prebuilt/fakeshim"),
				"go":                                      filepath.Join(repo, "tests/node/gostub.sh"),
			}
			for _, s := range suites {
				installs["tests/"+s+".test"] = filepath.Join(build, "tests", s+".test")
			}
			last := line == lines[len(lines)-1]
			containerd := "/usr/bin/containerd"
			if line != "1.6" {
				containerd = node.NodeBin + "/containerd-" + line + "/containerd"
			}
			// 2.4's binaries: for its own boot, and for tests/systemd.
			if line == "2.4" || (last && contains(suites, "systemd")) {
				for _, b := range []string{"containerd", "containerd-shim-runc-v2"} {
					installs["containerd-2.4/"+b] = filepath.Join(repo, "bin/containerd-2.4", b)
				}
			}
			for _, f := range []string{"containerd-shim-robust-gc.service", "containerd-shim-robust-gc.timer"} {
				installs["repo/contrib/systemd/"+f] = filepath.Join(repo, "contrib/systemd", f)
			}
			for name, src := range installs {
				if err := share.Install(name, src); err != nil {
					t.Fatal(err)
				}
			}
			su := node.Suite{Name: "containerd-" + line}
			path := "PATH=" + node.NodeBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
			for _, s := range suites {
				if once[s] && !last {
					continue
				}
				ds := drivers
				if !perDriver[s] {
					ds = []string{""}
				}
				for _, d := range ds {
					name := s
					if d != "" {
						name += "-" + d
					}
					// tests/<suite> finds the repository two levels up.
					dir := node.NodeBin + "/repo/tests/" + s
					st := node.Step{
						Name: name, Dir: dir, Timeout: 40 * time.Minute,
						Env: []string{path, "E2E_CONTAINERD=" + containerd, "E2E_OUT=/share/out/" + name,
							"E2E_CGROUP_DRIVER=" + d, "NODE_LINE=" + line,
							"SYSTEMD_CONTAINERD24=" + node.NodeBin + "/containerd-2.4/containerd",
							"SYSTEMD_UPSTREAM24=" + node.NodeBin + "/containerd-2.4/containerd-shim-runc-v2"},
						Args: append(append([]string{node.NodeBin + "/tests/" + s + ".test", "-test.v", "-test.count=1", "-test.timeout=" + testTimeout}, suiteArgs[s]...), devArgs...),
					}
					if d == "" {
						st.Env[3] = "E2E_CGROUP_DRIVER=cgroupfs"
					}
					su.Steps = append(su.Steps, st)
					su.Timeout += 40 * time.Minute
				}
			}
			if sh := os.Getenv("NODE_SHELL"); sh != "" {
				// Development: one shell command in the node instead of the suites.
				fmt.Fprintf(os.Stderr, "*** NODE_SHELL: no suite runs, only: %s\n", sh)
				su.Steps = []node.Step{{Name: "shell", Dir: "/", Env: []string{path}, Args: []string{"/bin/bash", "-c", sh}, Timeout: 10 * time.Minute}}
				su.Timeout = 10 * time.Minute
			}
			su.Timeout += node.BootTimeout
			res, err := node.Boot(ctx, node.BootConfig{Image: img, Share: share, Console: os.Stdout}, su)
			if res != nil {
				t.Logf("boot (%s): QEMU start to suite %s, total %s; node: %v", res.Accel, res.BootToSuite.Round(time.Second), res.Total.Round(time.Second), res.Facts)
			}
			keep(t, share, filepath.Join(repo, "tests/out/node", "containerd-"+line))
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range su.Steps {
				r := res.Steps[st.Name]
				outcome := "PASS"
				switch {
				case !r.Ran:
					outcome = "NOT RUN"
					t.Errorf("%s: the node never ran it", st.Name)
				case r.Exit != 0:
					outcome = fmt.Sprintf("FAIL (exit %d)", r.Exit)
					t.Errorf("%s on containerd %s: exit %d after %.0f s; failures:\n%s", st.Name, line, r.Exit, r.Seconds, failures(share, st.Name))
				}
				// Never skip-as-pass: a test that skipped in the node did
				// not run where users run.
				if skips := skipped(share, st.Name); skips != "" {
					outcome += " (SKIPPED: counted as failed)"
					t.Errorf("%s on containerd %s: tests skipped in the node (a skip is a failure here):\n%s", st.Name, line, skips)
				}
				report = append(report, fmt.Sprintf("| %s | %s | %s | %.0f s |", line, st.Name, outcome, r.Seconds))
			}
			report = append(report, fmt.Sprintf("| %s | (boot: QEMU start → suite %.0f s, whole boot %.0f s, %s) | | |", line, res.BootToSuite.Seconds(), res.Total.Seconds(), res.Accel))
			if res.Status != 0 {
				t.Errorf("suite status %d", res.Status)
			}
		})
	}
	md := "| containerd | step | result | time |\n|---|---|---|---|\n" + strings.Join(report, "\n") + "\n"
	fmt.Printf("\nnode results:\n%s", md)
	_ = os.MkdirAll(filepath.Join(repo, "tests/out/node"), 0o755)
	_ = os.WriteFile(filepath.Join(repo, "tests/out/node/results.md"), []byte(md), 0o644)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// keep copies the share's out/ (console, facts, steps' tables) to dst.
func keep(t *testing.T, share *node.Share, dst string) {
	_ = os.RemoveAll(dst)
	_ = os.MkdirAll(filepath.Dir(dst), 0o755)
	if out, err := exec.Command("cp", "-a", share.Out(), dst).CombinedOutput(); err != nil {
		t.Logf("keep the node's output: %v %s", err, out)
	}
}

var skipLine = regexp.MustCompile(`(?m)^\s*--- SKIP.*$`)

// skipped is the lines of the console that name tests skipped in step.
func skipped(share *node.Share, step string) string {
	return strings.Join(skipLine.FindAllString(stepOutput(share, step), 50), "\n")
}

var failLine = regexp.MustCompile(`(?m)^\s*--- FAIL.*$|^FAIL.*$|^\*\*\*.*$|^panic:.*$`)

// failures is the lines of the console that name what failed in step.
func failures(share *node.Share, step string) string {
	return strings.Join(failLine.FindAllString(stepOutput(share, step), 50), "\n")
}

// stepOutput is step's part of the console log.
func stepOutput(share *node.Share, step string) string {
	data, _ := os.ReadFile(share.Out("console.log"))
	s := string(data)
	if i := strings.Index(s, "=== node step "+step+" "); i >= 0 {
		s = s[i:]
		if j := strings.Index(s[1:], "=== node step "+step+": exit"); j >= 0 {
			s = s[:j+1]
		}
	}
	return s
}

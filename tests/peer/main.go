// Command peer is the peer suite (make peer): containerd's OWN integration
// tests, compiled from the containerd module each line's tools module
// (tests/peer/containerdXY) pins, run against a private containerd of that
// line twice in the same run — once with upstream's runc shim
// (containerd-shim-runc-v2 of the same version) and once with ours
// installed under upstream's name on containerd's PATH (delegating to
// upstream's, named by CONTAINERD_SHIM_ROBUST_DELEGATE) — and compared test
// by test:
//
//   - ours fails (or skips, or never reports) a test upstream passes: the
//     suite FAILS;
//   - a test fails for both: listed in the output and in
//     tests/out/peer-<line>.md, not hidden, not a failure of ours;
//   - a suite that cannot run (a binary missing, a daemon that does not
//     boot, a test binary that ran nothing, upstream passing nothing, a
//     required test absent) says so and FAILS; nothing is skipped as a pass.
//
// Lines: 2.3 and 2.4 run integration/ (CRI: shims, sandboxes, restarts) and
// integration/client; 2.3 also runs 2.4.2's shim tests its own module does
// not have; 1.7 runs integration/ only (its integration/client is a nested
// module the module proxy does not serve). subsets.go says which tests and
// why. Everything is offline: images are made from busybox-static and
// served by a registry on 127.0.0.1 (registry.go), CNI is Debian's
// containernetworking-plugins (/usr/lib/cni), runc is Debian's.
//
// It compiles the test binaries first (tests/peer/build.sh, Go's build cache
// makes a second build seconds), and prints the time of each step.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"go/build"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

var (
	flagRepo    = flag.String("repo", "../..", "repository root (bin/, tests/)")
	flagLines   = flag.String("lines", "1.7,2.3,2.4", "containerd lines to run, comma-separated")
	flagOut     = flag.String("out", "", "where peer-<line>.md and logs go (default <repo>/tests/out)")
	flagBusybox = flag.String("busybox", "", "static busybox for the images (default: busybox on PATH)")
	flagTimeout = flag.Duration("timeout", 15*time.Minute, "bound of one test binary run (-test.timeout)")
	flagRun     = flag.String("run", "", "run only these tests (a regexp over the subset's names; for debugging)")
	flagKeep    = flag.Bool("keep", false, "keep the work directories")
	flagRetries = flag.Int("retries", 2, "reruns of a test ours fails and upstream passes, before it counts as a regression")
	flagOurs    = flag.String("ours", "", "our shim (default <repo>/bin/containerd-shim-runc-v2-robust)")
)

// lineSpec is one containerd line.
type lineSpec struct {
	name    string // "2.4"
	version string // module version, from the tools module's go.mod
	v2      bool
}

func (l lineSpec) digits() string { return strings.ReplaceAll(l.name, ".", "") }

// suite is one test binary's run on one line.
type suite struct {
	name     string // as reported
	kind     string // "cri" or "client"
	binary   string
	srcDir   string   // the package's source (which tests exist)
	tests    []string // requested and present
	absent   []string // requested, not in this version
	required []string // must be present and reported by both flavours
}

// outcome of one top-level test.
type outcome struct {
	status   string // PASS, FAIL, SKIP, NORESULT (started, never reported), NOTRUN
	secs     float64
	detail   string // what the failure said
	attempts int    // runs (reruns: ours only, of tests upstream passed)
	failures int    // of which failed
	first    string // the first failure's detail, when a rerun passed
}

type flavourRun struct {
	results  map[string]map[string]outcome // suite -> test -> outcome
	errors   []string                      // why a suite could not run
	secs     map[string]float64            // suite -> wall time
	restarts int
}

// proxy serves the client tests' pulls of upstream's references.
var proxy *tlsProxy

// rootCtx ends on SIGINT or SIGTERM: the running test binary is killed,
// what it left is cleaned up, and no further suite starts.
var rootCtx = context.Background()

var logf = func(format string, args ...any) {
	fmt.Printf("peer: "+format+"\n", args...)
}

func main() {
	flag.Parse()
	os.Exit(run())
}

func run() int {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rootCtx = ctx
	repo, err := filepath.Abs(*flagRepo)
	if err != nil {
		logf("FATAL: %v", err)
		return 2
	}
	out := *flagOut
	if out == "" {
		out = filepath.Join(repo, "tests", "out")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		logf("FATAL: %v", err)
		return 2
	}
	if err := prereqs(); err != nil {
		logf("FATAL: the peer suite cannot run: %v", err)
		return 2
	}
	busybox := *flagBusybox
	if busybox == "" {
		if busybox, err = exec.LookPath("busybox"); err != nil {
			logf("FATAL: the peer suite cannot run: busybox not found (Debian's busybox-static; make deps)")
			return 2
		}
	}
	ours := *flagOurs
	if ours == "" {
		ours = filepath.Join(repo, "bin", "containerd-shim-runc-v2-robust")
	}
	if ours, err = filepath.Abs(ours); err != nil {
		logf("FATAL: %v", err)
		return 2
	}
	logf("ours: %s", ours)

	var lines []lineSpec
	for _, n := range strings.Split(*flagLines, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		v, err := moduleVersion(filepath.Join(repo, "tests", "peer", "containerd"+strings.ReplaceAll(n, ".", "")))
		if err != nil {
			logf("FATAL: line %s: %v", n, err)
			return 2
		}
		lines = append(lines, lineSpec{name: n, version: v, v2: strings.HasPrefix(n, "2.")})
	}

	// Compile: each line's tools module, and 2.4's for 2.3's cross suite.
	compile := map[string]bool{}
	for _, l := range lines {
		compile[l.name] = true
		if l.name == "2.3" {
			compile["2.4"] = true
		}
	}
	compileStart := time.Now()
	var names []string
	for n := range compile {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := time.Now()
		cmd := exec.Command(filepath.Join(repo, "tests", "peer", "build.sh"), n, filepath.Join(repo, "bin", "peer-"+n))
		cmd.Dir, cmd.Stdout, cmd.Stderr = repo, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			logf("FATAL: the peer suite cannot run: compiling containerd %s's tests failed: %v", n, err)
			return 2
		}
		logf("compiled containerd %s's tests in %s", n, time.Since(t).Round(time.Second))
	}
	compileTime := time.Since(compileStart)

	work, err := os.MkdirTemp("", "peer-")
	if err != nil {
		logf("FATAL: %v", err)
		return 2
	}
	if !*flagKeep {
		defer os.RemoveAll(work)
	}
	pauseBin := filepath.Join(work, "pause")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-trimpath", "-o", pauseBin, "./pause")
	build.Dir, build.Stdout, build.Stderr = filepath.Join(repo, "tests", "peer"), os.Stdout, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		logf("FATAL: the peer suite cannot run: building the pause binary: %v", err)
		return 2
	}
	reg, refs, err := startRegistry(busybox, pauseBin)
	if err != nil {
		logf("FATAL: the peer suite cannot run: images: %v", err)
		return 2
	}
	defer reg.close()
	proxy, err = startProxy(reg, work)
	if err != nil {
		logf("FATAL: the peer suite cannot run: proxy: %v", err)
		return 2
	}
	defer proxy.close()
	logf("registry on %s serving %s, %s, %s; HTTPS proxy for %s on %s",
		reg.addr, refs.BusyBox, refs.Pause, refs.Alpine, strings.Join(proxyHosts, ", "), proxy.addr)

	status := 0
	var summary []string
	for i, l := range lines {
		t := time.Now()
		verdict, ok := runLine(repo, out, work, l, i, ours, refs)
		if !ok {
			status = 1
		}
		summary = append(summary, fmt.Sprintf("containerd %s (%s): %s [%s]", l.name, l.version, verdict, time.Since(t).Round(time.Second)))
	}
	fmt.Println()
	fmt.Println("=== peer suite summary")
	for _, s := range summary {
		fmt.Println("  " + s)
	}
	fmt.Printf("  times: compile %s, total %s\n", compileTime.Round(time.Second), time.Since(start).Round(time.Second))
	if status != 0 {
		fmt.Println("=== peer suite FAILED (see above and tests/out/peer-<line>.md)")
	}
	return status
}

// prereqs are the tools containerd's tests and the daemons call.
func prereqs() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (containerd, runc, mounts, cgroups)")
	}
	for _, t := range []string{"runc", "pkill", "pidof", "lsof", "ip"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found on PATH", t)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			return fmt.Errorf("CNI plugin %s: %v (Debian's containernetworking-plugins; make deps)", p, err)
		}
	}
	return nil
}

var requireRE = regexp.MustCompile(`(?m)^(?:require)?\s*github\.com/containerd/containerd(/v2)? (v\S+)`)

func moduleVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", err
	}
	m := requireRE.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod requires no containerd", dir)
	}
	return string(m[2]), nil
}

// testNames are the top-level tests of the package in dir for linux.
func testNames(dir string) (map[string]bool, error) {
	ctx := build.Default
	ctx.GOOS = "linux"
	pkg, err := ctx.ImportDir(dir, 0)
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]*)\(\w+ \*testing\.T\)`)
	names := map[string]bool{}
	for _, f := range append(pkg.TestGoFiles, pkg.XTestGoFiles...) {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
	}
	return names, nil
}

func newSuite(name, kind, binary string, wanted, required []string) (suite, error) {
	s := suite{name: name, kind: kind, binary: binary, required: required}
	b, err := os.ReadFile(binary + ".dir")
	if err != nil {
		return s, fmt.Errorf("%s: source directory unknown (%v): rebuild with tests/peer/build.sh", binary, err)
	}
	s.srcDir = strings.TrimSpace(string(b))
	have, err := testNames(s.srcDir)
	if err != nil {
		return s, err
	}
	var only *regexp.Regexp
	if *flagRun != "" {
		if only, err = regexp.Compile(*flagRun); err != nil {
			return s, err
		}
	}
	for _, t := range wanted {
		switch {
		case only != nil && !only.MatchString(t):
		case have[t]:
			s.tests = append(s.tests, t)
		default:
			s.absent = append(s.absent, t)
		}
	}
	for _, r := range required {
		if !have[r] {
			return s, fmt.Errorf("required test %s is not in %s", r, s.srcDir)
		}
	}
	return s, nil
}

// suitesFor lists a line's suites. A suite that cannot be set up is an
// error of the line (reported, failing).
func suitesFor(repo string, l lineSpec) ([]suite, []string) {
	bin := func(line, name string) string { return filepath.Join(repo, "bin", "peer-"+line, name) }
	var (
		suites []suite
		errs   []string
	)
	add := func(name, kind, binary string, wanted, required []string) {
		s, err := newSuite(name, kind, binary, wanted, required)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
			return
		}
		suites = append(suites, s)
	}
	required := []string{"TestContainerdRestart"}
	if l.name == "2.4" {
		required = append(required, "TestShutdownShimWhenPauseExitsBeforeWorkload")
	}
	add("integration", "cri", bin(l.name, "integration.test"), criTests, required)
	if l.v2 {
		add("integration/client", "client", bin(l.name, "client.test"), clientTests, nil)
	}
	if l.name == "2.3" {
		add("integration of 2.4", "cri", bin("2.4", "integration.test"), crossShimTests,
			[]string{"TestShutdownShimWhenPauseExitsBeforeWorkload"})
	}
	return suites, errs
}

// runLine runs every suite of a line with upstream's shim, then ours, and
// compares. It returns the verdict and whether the line passed.
func runLine(repo, out, work string, l lineSpec, index int, ours string, refs imageRefs) (string, bool) {
	fmt.Printf("\n=== peer: containerd %s (%s)\n", l.name, l.version)
	containerd := filepath.Join(repo, "bin", "containerd-"+l.name, "containerd")
	upstreamShim := filepath.Join(repo, "bin", "containerd-"+l.name, shimName)
	var errs []string
	for _, p := range []string{containerd, upstreamShim, ours} {
		if _, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Sprintf("%v (make build daemons)", err))
		}
	}
	suites, serrs := suitesFor(repo, l)
	errs = append(errs, serrs...)
	lineWork := filepath.Join(work, "containerd-"+l.name)
	if err := os.MkdirAll(lineWork, 0o755); err != nil {
		errs = append(errs, err.Error())
	}
	listPath := filepath.Join(lineWork, "images.toml")
	if err := os.WriteFile(listPath, []byte(imageList(refs, l.v2)), 0o644); err != nil {
		errs = append(errs, err.Error())
	}
	runs := map[string]*flavourRun{}
	if len(errs) == 0 {
		for fi, flavor := range []string{"upstream", "ours"} {
			runs[flavor] = runFlavour(out, lineWork, l, flavor, 10+index*2+fi, containerd, upstreamShim, ours, listPath, suites, runs["upstream"])
		}
	}
	return report(out, l, suites, runs, errs)
}

// runFlavour runs every suite with one flavour's shim. For ours (up is
// upstream's run), a test upstream passed and ours did not is run again,
// alone, up to -retries times: a pass on a rerun is reported as a flake
// with the first failure, never hidden; failing every run is a regression.
func runFlavour(out, work string, l lineSpec, flavor string, netIndex int, containerd, upstreamShim, ours, listPath string, suites []suite, up *flavourRun) *flavourRun {
	fr := &flavourRun{results: map[string]map[string]outcome{}, secs: map[string]float64{}}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		fr.errors = append(fr.errors, msg)
		logf("%s %s: CANNOT RUN: %s", l.name, flavor, msg)
	}
	in, err := newInstall(work, l.name, flavor, containerd, upstreamShim, ours)
	if err != nil {
		fail("install: %v", err)
		return fr
	}
	for _, s := range suites {
		if len(s.tests) == 0 {
			continue
		}
		if rootCtx.Err() != nil {
			fail("%s: interrupted", s.name)
			continue
		}
		logPath := filepath.Join(out, fmt.Sprintf("peer-%s-%s-%s.log", l.name, flavor, strings.NewReplacer("/", "-", " ", "-").Replace(s.name)))
		_ = os.Remove(logPath)
		_ = os.Remove(strings.TrimSuffix(logPath, ".log") + ".containerd.log")
		t := time.Now()
		runSuite := func(s suite) (map[string]outcome, error) {
			if s.kind == "client" {
				return runClientSuite(in, listPath, s, logPath)
			}
			return runCRISuite(in, l, netIndex, listPath, s, logPath, fr)
		}
		res, rerr := runSuite(s)
		if rerr != nil {
			fail("%s: %v (log: %s)", s.name, rerr, logPath)
		}
		for _, name := range s.tests {
			o := res[name]
			o.attempts = 1
			if o.status != "PASS" && o.status != "SKIP" {
				o.failures = 1
			}
			if up != nil && o.status != "PASS" && up.results[s.name][name].status == "PASS" {
				first := o.detail
				for k := 1; k <= *flagRetries && o.status != "PASS" && rootCtx.Err() == nil; k++ {
					logf("%s %s %s: %s (upstream passed): rerun %d of %d", l.name, flavor, name, o.status, k, *flagRetries)
					one := s
					one.tests = []string{name}
					r, _ := runSuite(one)
					n := o.failures
					o = r[name]
					o.attempts, o.failures = k+1, n
					if o.status != "PASS" {
						o.failures++
					}
				}
				if o.status == "PASS" {
					o.first = first
				}
			}
			res[name] = o
		}
		fr.secs[s.name] = time.Since(t).Seconds()
		fr.results[s.name] = res
		pass, failed := 0, 0
		for _, o := range res {
			switch o.status {
			case "PASS":
				pass++
			case "FAIL", "NORESULT":
				failed++
			}
		}
		logf("%s %-8s %-20s %d passed, %d failed, of %d, in %s", l.name, flavor, s.name, pass, failed, len(s.tests), time.Since(t).Round(time.Second))
	}
	if !*flagKeep {
		_ = os.RemoveAll(in.dir)
	}
	return fr
}

// runCRISuite runs a CRI test binary, one test at a time, each against a
// fresh supervised daemon (its own root, state, runc root and CNI network,
// cleaned up after): what a failing test leaves (a sandbox, a shim, a
// stopped task) cannot fail the next one, and TestContainerdRestart starts
// from an empty containerd, as it requires.
func runCRISuite(in *install, l lineSpec, netIndex int, listPath string, s suite, logPath string, fr *flavourRun) (map[string]outcome, error) {
	res := map[string]outcome{}
	var errs []error
	var daemonLog string
	for _, t := range s.tests {
		if rootCtx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: interrupted", t))
			res[t] = outcome{status: "NOTRUN"}
			continue
		}
		one := s
		one.tests = []string{t}
		r, err := runCRITest(in, l, netIndex, listPath, one, logPath, fr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
		}
		if o, ok := r[t]; ok {
			res[t] = o
		} else {
			res[t] = outcome{status: "NOTRUN", detail: fmt.Sprint(err)}
		}
		daemonLog = filepath.Join(in.dir, "containerd.log")
	}
	if daemonLog != "" {
		_ = appendFile(daemonLog, strings.TrimSuffix(logPath, ".log")+".containerd.log")
		_ = os.Remove(daemonLog)
	}
	return res, errors.Join(errs...)
}

func runCRITest(in *install, l lineSpec, netIndex int, listPath string, s suite, logPath string, fr *flavourRun) (map[string]outcome, error) {
	d, err := newCRIDaemon(in, l.v2, netIndex, imageRefFromList(listPath, "Pause"))
	if err != nil {
		return nil, err
	}
	defer cleanup(func(f string, a ...any) { logf("%s %s %s: "+f, append([]any{l.name, in.flavor, s.tests[0]}, a...)...) },
		[]string{d.addr}, []string{d.root, d.state, d.runcRoot}, d.bridge, d.network)
	if err := d.start(); err != nil {
		d.stop()
		return nil, err
	}
	args := []string{
		"-test.v", "-test.run", runRegex(s.tests), "-test.timeout", flagTimeout.String(),
		"-cri-endpoint", "unix://" + d.addr,
		"-containerd-bin", in.daemon,
		"-image-list", listPath,
	}
	if l.v2 {
		args = append(args, "-build-dir", in.binDir)
	} else {
		args = append(args, "-cri-root", filepath.Join(d.root, "io.containerd.grpc.v1.cri"))
	}
	res, err := runBinary(in, s, args, nil, logPath)
	fr.restarts += d.restarts()
	d.stop()
	return res, err
}

// runClientSuite runs integration/client: its TestMain starts "containerd"
// from PATH (the line's, in our bin directory) with upstream's test
// configuration, root /var/lib/containerd-test and state
// /run/containerd-test (fixed by the tests), so that the restart tests can
// restart it.
func runClientSuite(in *install, listPath string, s suite, logPath string) (map[string]outcome, error) {
	const root, state = "/var/lib/containerd-test", "/run/containerd-test"
	if busy := processesWith(root); len(busy) > 0 {
		return nil, fmt.Errorf("%s is in use by pid(s) %v (another run of containerd's client tests?)", root, busy)
	}
	addrDir := filepath.Join(in.dir, "client")
	if err := os.MkdirAll(addrDir, 0o755); err != nil {
		return nil, err
	}
	addr := filepath.Join(addrDir, "containerd.sock")
	defer cleanup(func(f string, a ...any) { logf("%s: "+f, append([]any{in.flavor}, a...)...) },
		[]string{addr}, []string{root, state, addrDir}, "", "")
	args := []string{
		"-test.v", "-test.run", runRegex(s.tests), "-test.timeout", flagTimeout.String(),
		"-test.root", "-address", addr, "-no-criu",
		"-image-list", listPath,
	}
	return runBinary(in, s, args, proxy.env(), logPath)
}

// processesWith lists pids whose command line mentions s.
func processesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func imageRefFromList(listPath, key string) string {
	b, _ := os.ReadFile(listPath)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " = "); ok && k == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

var (
	runRE    = regexp.MustCompile(`^=== RUN\s+(Test[^/\s]+)$`)
	resultRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (Test[^/\s]+) \(([\d.]+)s\)`)
	errorRE  = regexp.MustCompile(`^\s+Error:\s+(.*)$`)
	fieldRE  = regexp.MustCompile(`^\s+(Error Trace|Error|Test|Messages):`)
	logRE    = regexp.MustCompile(`^\s+(\S+_test\.go:\d+: .*)$`)
)

// failureDetail is what a failed test said: testify's "Error:" with its
// continuation lines and "Messages:", else its last t.Log/t.Fatal line.
func failureDetail(lines []string) string {
	for i, l := range lines {
		m := errorRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		parts := []string{strings.TrimSpace(m[1])}
		for _, c := range lines[i+1:] {
			if fm := fieldRE.FindStringSubmatch(c); fm != nil {
				if fm[1] == "Messages" {
					parts = append(parts, strings.TrimSpace(c))
				}
				if fm[1] != "Messages" && fm[1] != "Test" {
					break
				}
				continue
			}
			if !strings.HasPrefix(c, "    ") || logRE.MatchString(c) {
				break
			}
			parts = append(parts, strings.TrimSpace(c))
		}
		return clip(strings.Join(parts, " "), 400)
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if m := logRE.FindStringSubmatch(lines[i]); m != nil {
			return clip(m[1], 400)
		}
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// runBinary runs a test binary (verbose), its output in logPath, and
// parses the top-level results. A test that started and never reported
// (a panic, the timeout) is NORESULT; a test asked for and never started
// is NOTRUN. The error says why the binary could not run at all.
func runBinary(in *install, s suite, args, env []string, logPath string) (map[string]outcome, error) {
	wd := filepath.Join(in.dir, "wd-"+s.kind)
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	from, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "=== peer: %s %s\n", s.binary, strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(rootCtx, *flagTimeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.binary, args...)
	cmd.Env, cmd.Dir = append(in.env(), env...), wd
	cmd.Stdout, cmd.Stderr = logFile, logFile
	runErr := cmd.Run()
	fmt.Fprintf(logFile, "=== peer: exit: %v\n", runErr)
	if _, err := logFile.Seek(from, io.SeekStart); err != nil {
		return nil, err
	}

	res := map[string]outcome{}
	var (
		current string
		lines   []string // the current test's output, bounded
		details = map[string]string{}
	)
	sc := bufio.NewScanner(logFile)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if m := runRE.FindStringSubmatch(line); m != nil {
			current, lines = m[1], nil
			if _, ok := res[current]; !ok {
				res[current] = outcome{status: "NORESULT"}
			}
			continue
		}
		if m := resultRE.FindStringSubmatch(line); m != nil {
			var secs float64
			fmt.Sscanf(m[3], "%g", &secs)
			o := outcome{status: m[1], secs: secs}
			if m[1] == "FAIL" {
				o.detail = failureDetail(lines)
			}
			res[m[2]] = o
			current, lines = "", nil
			continue
		}
		if current != "" {
			if len(lines) >= 400 {
				lines = lines[100:]
			}
			lines = append(lines, line)
		}
	}
	if current != "" {
		details[current] = failureDetail(lines)
	}
	for t, o := range res {
		if o.status == "NORESULT" {
			o.detail = "started, never reported (binary ended: " + fmt.Sprint(runErr) + "): " + details[t]
			res[t] = o
		}
	}
	ran := 0
	for _, t := range s.tests {
		if _, ok := res[t]; ok {
			ran++
		} else {
			res[t] = outcome{status: "NOTRUN"}
		}
	}
	if ran == 0 {
		return res, fmt.Errorf("the test binary ran none of its %d tests (exit: %v):\n%s", len(s.tests), runErr, tail(logPath, 15))
	}
	return res, nil
}

// report prints and writes tests/out/peer-<line>.md; the line passes when
// every suite ran for both flavours, upstream passed something, every
// required test was reported by both, and ours passed every test upstream
// passed.
func report(out string, l lineSpec, suites []suite, runs map[string]*flavourRun, errs []string) (string, bool) {
	var md strings.Builder
	fmt.Fprintf(&md, "# Peer suite: containerd %s (%s)\n\n", l.name, l.version)
	fmt.Fprintf(&md, "containerd's own integration tests (module %s), run in the same `make peer` against a private containerd %s with upstream's runc shim, then with ours installed as `containerd-shim-runc-v2` (delegating to upstream's). Ours must pass every test upstream passes; a test failing for both is listed, not hidden.\n\n", l.version, l.name)
	for _, f := range []string{"upstream", "ours"} {
		if r := runs[f]; r != nil {
			errs = append(errs, prefixAll(f+": ", r.errors)...)
		}
	}
	var regressions, both, oursOnly, skipped, flaky []string
	table := &strings.Builder{}
	fmt.Fprintf(table, "| suite | test | upstream | ours |\n|---|---|---|---|\n")
	for _, s := range suites {
		up, ou := runs["upstream"], runs["ours"]
		if up == nil || ou == nil {
			continue
		}
		upPassed := 0
		for _, t := range s.tests {
			u, o := up.results[s.name][t], ou.results[s.name][t]
			if u.status == "" {
				u.status = "NOTRUN"
			}
			if o.status == "" {
				o.status = "NOTRUN"
			}
			if u.status == "PASS" {
				upPassed++
			}
			fmt.Fprintf(table, "| %s | %s | %s | %s |\n", s.name, t, cell(u), cell(o))
			key := s.name + " " + t
			switch {
			case u.status == "PASS" && o.status != "PASS":
				regressions = append(regressions, fmt.Sprintf("%s: ours %s (%d of %d runs): %s", key, o.status, o.failures, o.attempts, o.detail))
			case u.status == "PASS" && o.failures > 0:
				flaky = append(flaky, fmt.Sprintf("%s: ours failed %d of %d runs, first: %s", key, o.failures, o.attempts, o.first))
			case u.status != "PASS" && u.status != "SKIP" && o.status != "PASS" && o.status != "SKIP":
				both = append(both, fmt.Sprintf("%s: upstream %s: %s; ours %s: %s", key, u.status, u.detail, o.status, o.detail))
			case u.status != "PASS" && u.status != "SKIP" && o.status == "PASS":
				oursOnly = append(oursOnly, fmt.Sprintf("%s: upstream %s: %s", key, u.status, u.detail))
			case u.status == "SKIP" || o.status == "SKIP":
				skipped = append(skipped, fmt.Sprintf("%s: upstream %s, ours %s", key, u.status, o.status))
			}
		}
		// A broken environment fails everything: judged on suites of more
		// than two tests (2.3's cross suite may legitimately fail for both,
		// and -run may leave one test).
		if len(s.tests) > 2 && upPassed == 0 {
			errs = append(errs, fmt.Sprintf("%s: upstream's shim passed none of %d tests: the environment is broken, nothing was compared", s.name, len(s.tests)))
		}
		for _, r := range s.required {
			if !slices.Contains(s.tests, r) {
				continue // -run left it out
			}
			for _, f := range []string{"upstream", "ours"} {
				if st := runs[f].results[s.name][r].status; st == "" || st == "NOTRUN" {
					errs = append(errs, fmt.Sprintf("%s: required test %s was not run with %s's shim", s.name, r, f))
				}
			}
		}
	}
	ok := len(errs) == 0 && len(regressions) == 0
	verdict := "PASS: ours passes every test upstream passes"
	switch {
	case len(errs) > 0:
		verdict = "FAIL: the suite could not run in full"
	case len(regressions) > 0:
		verdict = fmt.Sprintf("FAIL: ours fails %d test(s) upstream passes", len(regressions))
	}
	if ok && len(both)+len(flaky) > 0 {
		verdict += fmt.Sprintf(" (listed: %d failing for both, %d flaky with ours)", len(both), len(flaky))
	}
	fmt.Fprintf(&md, "**Verdict: %s.**\n\n", verdict)
	section := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&md, "## %s\n\n", title)
		fmt.Printf("--- %s (%d):\n", title, len(items))
		for _, it := range items {
			fmt.Fprintf(&md, "- %s\n", it)
			fmt.Printf("    %s\n", it)
		}
		md.WriteString("\n")
	}
	section("Could not run", errs)
	section("Ours fails, upstream passes (REGRESSIONS)", regressions)
	section("Failing for both shims (listed, not hidden)", both)
	section("Flaky with ours: failed, then passed on a rerun (upstream passed its run)", flaky)
	section("Ours passes, upstream fails", oursOnly)
	section("Skipped by the tests", skipped)
	var absent []string
	for _, s := range suites {
		for _, t := range s.absent {
			absent = append(absent, s.name+" "+t)
		}
	}
	if len(absent) > 0 {
		fmt.Fprintf(&md, "Not in this version's module (not run): %s.\n\n", strings.Join(absent, ", "))
	}
	md.WriteString("## Results\n\n")
	md.WriteString(table.String())
	md.WriteString("\n## Times\n\n")
	for _, f := range []string{"upstream", "ours"} {
		r := runs[f]
		if r == nil {
			continue
		}
		var parts []string
		for _, s := range suites {
			if secs, ok := r.secs[s.name]; ok {
				parts = append(parts, fmt.Sprintf("%s %.0fs", s.name, secs))
			}
		}
		fmt.Fprintf(&md, "- %s: %s; containerd restarted %d time(s) by the tests\n", f, strings.Join(parts, ", "), r.restarts)
	}
	if err := os.WriteFile(filepath.Join(out, "peer-"+l.name+".md"), []byte(md.String()), 0o644); err != nil {
		logf("write report: %v", err)
		ok = false
	}
	fmt.Printf("=== peer: containerd %s: %s (tests/out/peer-%s.md)\n", l.name, verdict, l.name)
	return verdict, ok
}

func cell(o outcome) string {
	var c string
	switch o.status {
	case "PASS", "SKIP":
		c = fmt.Sprintf("%s %.1fs", o.status, o.secs)
	case "FAIL":
		c = fmt.Sprintf("**FAIL** %.1fs", o.secs)
	default:
		c = "**" + o.status + "**"
	}
	if o.attempts > 1 {
		c += fmt.Sprintf(" (%d of %d runs failed)", o.failures, o.attempts)
	}
	return c
}

func prefixAll(p string, s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = p + x
	}
	return out
}

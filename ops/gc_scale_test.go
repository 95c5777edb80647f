package ops

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/internal/testutil"
)

var (
	gcScale         = flag.Int("gcscale", 0, "TestGCScale: the number of orphans (0: do not run the benchmark)")
	gcScaleParallel = flag.Int("gcscale-parallel", 0, "TestGCScale: also time gc --parallel N (0: only the default and 1)")
	gcScaleMounts   = flag.Int("gcscale-mount-every", 1, "TestGCScale: a tmpfs on the rootfs of one orphan in N (1: every orphan, as a dead shim leaves it; 0: none)")
)

// scaleLiveEvery: one orphan in four has a live container process (at
// least the 20% the issue asks for).
const scaleLiveEvery = 4

// scaleRun is one timed run of the built binary over a fresh set of
// orphans.
type scaleRun struct {
	name    string
	elapsed time.Duration
	maxRSS  int64 // KiB, the largest ru_maxrss of the processes measured
	procs   int   // processes run
	sampled int   // of which measured (0: all)
}

// TestGCScale is the scale benchmark of gc, as operators run it: the built
// binary (CGO_ENABLED=0, as `make build` builds it) sweeps N orphans (one
// in four with a live container process in its own cgroups, proven by
// runc-style state or cgroup membership; each with a tmpfs mounted on its
// rootfs, as a task whose shim died keeps its rootfs mount, unless
// -gcscale-mount-every says otherwise), laid out afresh for each of three
// runs:
//
//   - `gc --parallel` default (the number of CPUs);
//   - `gc --parallel 1`;
//   - the same deletes run one by one, one `delete` process per task
//     (what an operator's shell loop, or containerd at start-up, does).
//
// It prints the wall time and peak RSS (ru_maxrss of the gc process, and
// the largest of one delete process in 50, measured with GNU time) of each
// and the ratios, and fails only when a run leaves anything behind or does
// not delete every orphan; the targets (default ≤ 0.3× one by
// one, peak RSS ≤ 64 MiB) are printed beside the figures.
//
// With -gcscale-parallel=N it also times `gc --parallel N`.
//
// It is opt-in, and the only test of the package that skips: without
// -gcscale it does not run (go test ./ops -run TestGCScale -gcscale=1000 -v).
func TestGCScale(t *testing.T) {
	if *gcScale <= 0 {
		t.Skip("opt-in benchmark: go test ./ops -run TestGCScale -gcscale=1000 -v")
	}
	testutil.NeedRoot(t)
	if _, err := os.Stat(gnuTime); err != nil {
		t.Fatalf("FATAL: the benchmark measures peak RSS with GNU time: install it (apt-get install time): %v", err)
	}
	t.Setenv(EnvMetricsDir, "")
	n := *gcScale
	bin := filepath.Join(t.TempDir(), "containerd-shim-runc-v2-robust")
	build := exec.Command("go", "build", "-o", bin, "./cmd/containerd-shim-runc-v2-robust")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dead := filepath.Join(t.TempDir(), "dead")
	testutil.DeadSocket(t, dead)
	nss := []string{testutil.RandID("gcscale-a"), testutil.RandID("gcscale-b")}

	gcRun := func(name string, parallel int) func(t *testing.T, o *orphans) scaleRun {
		return func(t *testing.T, o *orphans) scaleRun {
			args := []string{"gc", "--state-dir", o.state, "--runc-root", o.runcRoot, "--older-than", "1h", "--format", "json"}
			if parallel > 0 {
				args = append(args, "--parallel", strconv.Itoa(parallel))
			}
			rss := filepath.Join(t.TempDir(), "maxrss")
			cmd := exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rss, bin}, args...)...)
			cmd.Stderr = os.Stderr
			start := time.Now()
			out, err := cmd.Output()
			elapsed := time.Since(start)
			if err != nil {
				t.Errorf("gc %v: %v", args, err)
			}
			var g GCReport
			if err := json.Unmarshal(out, &g); err != nil {
				t.Fatalf("gc: not the JSON report: %v", err)
			}
			if g.Summary[string(GCDeleted)] != n || g.Failed() {
				t.Errorf("%s: summary %v, problems %v", name, g.Summary, g.Problems)
			}
			return scaleRun{name: name, elapsed: elapsed, maxRSS: readMaxRSS(t, rss), procs: 1}
		}
	}
	oneByOne := func(t *testing.T, o *orphans) scaleRun {
		r := scaleRun{name: "one delete process per task, one by one"}
		rss := filepath.Join(t.TempDir(), "maxrss")
		start := time.Now()
		for i, dir := range o.dirs {
			ns, id := filepath.Base(filepath.Dir(dir)), filepath.Base(dir)
			args := []string{"-namespace", ns, "-id", id, "-bundle", dir, "delete"}
			cmd := exec.Command(bin, args...)
			sampled := i%rssSampleEvery == 0
			if sampled {
				cmd = exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rss, bin}, args...)...)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("delete %s/%s: %v\n%s", ns, id, err, out)
			}
			if sampled {
				r.maxRSS = max(r.maxRSS, readMaxRSS(t, rss))
				r.sampled++
			}
			r.procs++
		}
		r.elapsed = time.Since(start)
		return r
	}

	runs := []struct {
		name string
		run  func(*testing.T, *orphans) scaleRun
	}{
		{fmt.Sprintf("gc --parallel default (%d)", DefaultParallel()), gcRun("gc --parallel default", 0)},
		{"gc --parallel 1", gcRun("gc --parallel 1", 1)},
		{"one by one", oneByOne},
	}
	if p := *gcScaleParallel; p > 0 {
		runs = append(runs, struct {
			name string
			run  func(*testing.T, *orphans) scaleRun
		}{fmt.Sprintf("gc --parallel %d", p), gcRun(fmt.Sprintf("gc --parallel %d", p), p)})
	}
	results := make([]scaleRun, len(runs))
	for i, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			state, runcRoot := t.TempDir(), t.TempDir()
			setup := time.Now()
			o := makeOrphansMounted(t, state, runcRoot, dead, nss, n, scaleLiveEvery, *gcScaleMounts)
			t.Logf("laid out %d orphans (%d with a live process) in %s", n, len(o.procs), time.Since(setup).Round(time.Millisecond))
			results[i] = r.run(t, o)
			results[i].name = r.name
			o.assertClean(t)
		})
	}

	base := results[2].elapsed
	mounted := "none"
	if m := *gcScaleMounts; m > 0 {
		mounted = fmt.Sprintf("1 in %d", m)
	}
	t.Logf("gc of %d orphans (%d with a live container process; rootfs mounted: %s), %d CPUs:", n, (n+scaleLiveEvery-1)/scaleLiveEvery, mounted, runtime.NumCPU())
	for _, r := range results {
		of := fmt.Sprintf("%d process", r.procs)
		if r.sampled > 0 {
			of = fmt.Sprintf("largest of %d sampled of %d processes", r.sampled, r.procs)
		}
		t.Logf("  %-36s %9s  %6.3fx one by one  %6.3fx --parallel 1  peak RSS %5.1f MiB (%s)",
			r.name, r.elapsed.Round(time.Millisecond), r.elapsed.Seconds()/base.Seconds(),
			r.elapsed.Seconds()/results[1].elapsed.Seconds(), float64(r.maxRSS)/1024, of)
	}
	t.Logf("targets: gc ≤ 0.3x the same deletes one by one (%.3fx), peak RSS ≤ 64 MiB (%.1f MiB)",
		results[0].elapsed.Seconds()/base.Seconds(), float64(results[0].maxRSS)/1024)
}

// gnuTime measures peak RSS. Go starts a child with vfork, so the
// child's own ru_maxrss (ProcessState.SysUsage) counts the parent's
// resident set at exec (the kernel records the shared mm's high-water mark
// then): this test's, not the child's. GNU time forks, so the ru_maxrss
// it prints (%M, KiB) is the measured process's alone.
const gnuTime = "/usr/bin/time"

// rssSampleEvery: one delete process in so many runs under GNU time, for
// its peak RSS; the others run bare, so that the extra process start does
// not slow the one-by-one baseline.
const rssSampleEvery = 50

// readMaxRSS reads what `time -f %M -o path` wrote: KiB.
func readMaxRSS(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("peak RSS: %v", err)
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		t.Fatalf("peak RSS: %s is empty", path)
	}
	kib, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil {
		t.Fatalf("peak RSS: %q: %v", data, err)
	}
	return kib
}

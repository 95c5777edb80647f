package e2e

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// TestResidueCheckCanFail proves that every assertion of the suite can
// fail: the residue of a live container (nothing deleted, a host dir
// bind-mounted in its bundle and one of its files changed) must name every
// kind of leftover, and a pid with another start time must not pass for a
// recorded process.
func TestResidueCheckCanFail(t *testing.T) {
	residueSelfCheck(t, shared)
}

// TestShimKilled: containerd is running; the shim dies by SIGKILL after its
// task directory was broken as named; containerd runs the shim's delete.
func TestShimKilled(t *testing.T) {
	damages := []damage{
		plain,
		runtimeMissing,
		{name: "init.pid missing", apply: removeFiles(harness.InitPidFile)},
		{name: "options.json missing", apply: removeFiles(harness.OptionsFile)},
		{name: "config.json missing", apply: removeFiles(harness.ConfigFile)},
		{name: "runtime corrupt", apply: corruptFile(harness.RuntimeFile)},
		{name: "init.pid corrupt", apply: corruptFile(harness.InitPidFile)},
		{name: "options.json corrupt", apply: corruptFile(harness.OptionsFile)},
		{name: "config.json corrupt", apply: corruptFile(harness.ConfigFile)},
		{name: "all four missing", apply: removeFiles(harness.BundleFiles...)},
		{name: "runc state dir removed", apply: (*harness.Container).RemoveRuncState},
		{name: "runtime binary missing", apply: (*harness.Container).PointAtMissingRuntime},
		{name: "host dir bind-mounted on the rootfs", apply: bindHostDir("rootfs/mnt/host")},
		{name: "host dir bind-mounted in the bundle, outside the rootfs", apply: bindHostDir("volume")},
		{name: "init.pid names a process outside the container", harm: bystander(false)},
		{name: "init.pid names a process outside, runc state removed", harm: bystander(true)},
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			for _, s := range shims {
				t.Run(s.name, func(t *testing.T) {
					runKilled(t, shared, s, dmg.name, dmg)
				})
			}
		})
	}
}

// TestPoststopHook: the container has an OCI poststop hook (a script on
// the host that records whether the bundle's config.json and rootfs, still
// mounted, were there when it ran); containerd is running; the shim dies by
// SIGKILL; containerd runs the shim's delete, whose runtime delete must run
// the hook exactly once, before the task directory is taken apart. Also with
// the bundle's `runtime` file removed (the runtime is then found by its
// default name).
func TestPoststopHook(t *testing.T) {
	damages := []damage{
		{name: "shim SIGKILL", poststopHook: true},
		{name: "runtime missing", poststopHook: true, apply: removeFiles(harness.RuntimeFile)},
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			for _, s := range shims {
				t.Run(s.name, func(t *testing.T) {
					runKilled(t, shared, s, "poststop hook: "+dmg.name, dmg)
				})
			}
		})
	}
}

// TestContainerdRestart: containerd is killed; while it is down every shim
// is killed and the bundles are damaged; at its restart containerd finds
// the dead shims and runs their deletes during start-up. No TaskExit can be
// seen (it is published before the daemon serves); everything else is
// asserted.
func TestContainerdRestart(t *testing.T) {
	damages := []damage{
		plain,
		runtimeMissing,
		{name: "config.json corrupt", apply: corruptFile(harness.ConfigFile)},
		{name: "runc state dir removed", apply: (*harness.Container).RemoveRuncState},
		{name: "host dir bind-mounted on the rootfs", apply: bindHostDir("rootfs/mnt/host")},
	}
	type task struct {
		s    shimUnderTest
		dmg  damage
		name string
		c    *harness.Container
	}
	var tasks []task
	for _, dmg := range damages {
		for _, s := range shims {
			name := "containerd restarted: " + dmg.name
			tasks = append(tasks, task{s, dmg, name, startContainer(t, shared, s, caseID("restart "+dmg.name, s.name))})
		}
	}
	shared.KeepServing(t)
	if err := shared.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks {
		if err := tk.c.KillShim(); err != nil {
			t.Fatal(err)
		}
		if tk.dmg.apply != nil {
			if err := tk.dmg.apply(tk.c); err != nil {
				t.Fatalf("damage %q: %v", tk.dmg.name, err)
			}
		}
	}
	_, logOff := shared.LogSince(0)
	ctx := context.Background()
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	for _, tk := range tasks {
		t.Run(tk.dmg.name+"/"+tk.s.name, func(t *testing.T) {
			r := waitResidue(ctx, tk.s, tk.c, true)
			results.record(tk.name, tk.s.name, outcome(r))
			if !tk.s.asserted {
				t.Logf("%s with %s: %s", tk.name, tk.s.name, outcome(r))
				return
			}
			checkClean(t, r)
			if t.Failed() {
				log, _ := shared.LogSince(logOff)
				t.Logf("containerd log of the restart:\n%s", log)
			}
		})
	}
}

// TestDeleteByHand: containerd is stopped and the shims are killed; the
// delete is run by hand as containerd runs it (arguments, environment,
// working directory): twice in a row for one task, and twice at the same
// time for another. The residue is taken before containerd comes back
// (which would clean up after the shim at start-up); then containerd must
// not know the tasks.
func TestDeleteByHand(t *testing.T) {
	type pair struct {
		s                 shimUnderTest
		twice, concurrent *harness.Container
	}
	var pairs []pair
	for _, s := range shims {
		pairs = append(pairs, pair{
			s:          s,
			twice:      startContainer(t, shared, s, caseID("by hand twice", s.name)),
			concurrent: startContainer(t, shared, s, caseID("by hand concurrent", s.name)),
		})
	}
	shared.KeepServing(t)
	if err := shared.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		for _, c := range []*harness.Container{p.twice, p.concurrent} {
			if err := c.KillShim(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	for _, p := range pairs {
		t.Run("twice in a row/"+p.s.name, func(t *testing.T) {
			c := p.twice
			first := c.RunDelete(ctx)
			second := c.RunDelete(ctx)
			r := waitResidue(ctx, p.s, c, false)
			cell := outcome(r, exitCodes(first, second))
			results.record("delete by hand, twice in a row", p.s.name, cell)
			if !p.s.asserted {
				t.Logf("with %s: %s", p.s.name, cell)
				return
			}
			for i, d := range []harness.DeleteResult{first, second} {
				if d.ExitCode != 0 {
					t.Errorf("delete #%d: exit %d (%v), stderr:\n%s", i+1, d.ExitCode, d.Err, d.Stderr)
				}
			}
			switch resp := first.Response; {
			case resp == nil:
				t.Errorf("delete #1: stdout %q is not a DeleteResponse", first.Stdout)
			case int(resp.Pid) != c.Init.Pid || resp.ExitStatus != exitStatusKilled:
				t.Errorf("delete #1: DeleteResponse pid %d status %d, want pid %d status %d", resp.Pid, resp.ExitStatus, c.Init.Pid, exitStatusKilled)
			}
			checkClean(t, r)
		})
		t.Run("two at the same time/"+p.s.name, func(t *testing.T) {
			c := p.concurrent
			var wg sync.WaitGroup
			res := make([]harness.DeleteResult, 2)
			start := make(chan struct{})
			for i := range res {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res[i] = c.RunDelete(ctx)
				}()
			}
			close(start)
			wg.Wait()
			r := waitResidue(ctx, p.s, c, false)
			cell := outcome(r, exitCodes(res...))
			results.record("delete by hand, two at the same time", p.s.name, cell)
			if !p.s.asserted {
				t.Logf("with %s: %s", p.s.name, cell)
				return
			}
			for i, d := range res {
				if d.ExitCode != 0 {
					t.Errorf("delete %d of 2: exit %d (%v), stderr:\n%s", i+1, d.ExitCode, d.Err, d.Stderr)
				}
			}
			checkClean(t, r)
		})
	}
	if err := shared.Start(ctx); err != nil {
		t.Fatalf("restart containerd: %v", err)
	}
	for _, p := range pairs {
		if !p.s.asserted {
			continue
		}
		for _, c := range []*harness.Container{p.twice, p.concurrent} {
			if known, err := c.TaskKnown(ctx); err != nil || known {
				t.Errorf("%s: containerd still knows the task after restart (known=%v, err=%v)", c.Cfg.ID, known, err)
			}
		}
	}
}

// TestCgroupV2View: the daemon, its shims and runc see a pure cgroup v2
// machine (a private mount namespace with cgroup2 at /sys/fs/cgroup; on
// this hybrid host every controller is bound to v1, so the spec carries no
// resources).
func TestCgroupV2View(t *testing.T) {
	d, err := newDaemon(true)
	if err != nil {
		t.Fatalf("cgroup v2 view daemon: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close cgroup v2 view daemon: %v", err)
		}
	})
	t.Run("harness self-check", func(t *testing.T) { residueSelfCheck(t, d) })
	for _, dmg := range []damage{plain, runtimeMissing, {name: "config.json corrupt", apply: corruptFile(harness.ConfigFile)}} {
		t.Run(dmg.name, func(t *testing.T) {
			for _, s := range shims {
				t.Run(s.name, func(t *testing.T) {
					runKilled(t, d, s, "cgroup v2 view: "+dmg.name, dmg)
				})
			}
		})
	}
}

func exitCodes(res ...harness.DeleteResult) string {
	s := "exit"
	for i, r := range res {
		if i > 0 {
			s += ","
		}
		if r.ExitCode < 0 {
			s += " timeout"
			continue
		}
		s += " " + strconv.Itoa(r.ExitCode)
	}
	return s
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Pacing of the RSS samples (not figures).
const (
	// idleWait lets every shim finish its start-up work (and a GC cycle)
	// before the first sample.
	idleWait = 3 * time.Second
	// rssInterval is the time between two rounds of samples.
	rssInterval = 500 * time.Millisecond
)

// runningArgs is the container's only process: the smallest container the
// shim can serve.
var runningArgs = []string{"sleep", "1000000"}

// runningFigures is phase 3 for one shim.
type runningFigures struct {
	// StartMS is a container's create (NewContainer + NewTask) + Start
	// through containerd's client, warm-up excluded.
	StartMS        summary   `json:"create_start_ms"`
	StartSamplesMS []float64 `json:"create_start_samples_ms"`
	// RSSKiB summarises, over the idle shims, each shim's median VmRSS;
	// RSSAnonKiB and RSSFileKiB its two main parts (heap, stacks and Go
	// runtime data; pages of the binary and other files).
	RSSKiB     summary   `json:"rss_kib"`
	RSSPerShim []float64 `json:"rss_kib_per_shim"`
	RSSAnonKiB summary   `json:"rss_anon_kib"`
	RSSFileKiB summary   `json:"rss_file_kib"`
	// PSSKiB is each shim's proportional set size (smaps_rollup Pss)
	// with the phase's shims all running: not a target, for context.
	PSSKiB summary `json:"pss_kib"`
	// ServedBy counts the timed containers' serving shims by binary
	// (/proc/<shim>/exe, by name in the daemon's bin directory): for ours,
	// the delegate, upstream's containerd-shim-runc-v2 of the same line.
	ServedBy map[string]int `json:"served_by"`
}

// runningResult is phase 3 for both shims.
type runningResult struct {
	Ours       runningFigures `json:"ours"`
	Upstream   runningFigures `json:"upstream"`
	StartRatio float64        `json:"ratio_create_start_median"`
	RSSRatio   float64        `json:"ratio_rss_median"`
}

// running is one container started by the phase, with its shim.
type running struct {
	k    shimKind
	ns   string
	ctr  containerd.Container
	task containerd.Task
	init harness.Proc
	shim harness.Proc
}

// runningPhase runs phase 3: one untimed warm-up container per shim, then
// Starts timed create+starts per shim, interleaved; all stay running, and
// once idle every shim's VmRSS is sampled RSSSamples times.
func (b *bench) runningPhase(ctx context.Context) (res runningResult, err error) {
	f, err := b.newFleet(ctx, "running")
	if err != nil {
		return res, err
	}
	var rs []*running
	defer func() { err = joinCleanup(err, stopAll(rs), f.close()) }()

	figs := map[string]*runningFigures{b.ours.Name: &res.Ours, b.upstream.Name: &res.Upstream}
	progress("%s running: %d timed create+starts per shim", b.line.Name, b.cfg.Starts)
	if err := b.startAll(ctx, f, figs, &rs); err != nil {
		return res, err
	}
	progress("%s running: sampling VmRSS of %d idle shims", b.line.Name, len(rs))
	time.Sleep(idleWait)
	perShim, err := b.sampleRSS(rs[2:]) // not the warm-up containers
	if err != nil {
		return res, err
	}
	for _, r := range rs[2:] {
		fg := figs[r.k.Name]
		if fg.ServedBy == nil {
			fg.ServedBy = map[string]int{}
		}
		fg.ServedBy[servedBy(f.d, r.shim.Pid)]++
	}
	for _, k := range []shimKind{b.ours, b.upstream} {
		fg := figs[k.Name]
		fg.StartMS = summarize(fg.StartSamplesMS)
		fg.RSSPerShim = perShim[k.Name]["VmRSS"]
		fg.RSSKiB = summarize(fg.RSSPerShim)
		fg.RSSAnonKiB = summarize(perShim[k.Name]["RssAnon"])
		fg.RSSFileKiB = summarize(perShim[k.Name]["RssFile"])
		fg.PSSKiB = summarize(perShim[k.Name]["Pss"])
	}
	res.StartRatio = ratio(res.Ours.StartMS.Median, res.Upstream.StartMS.Median)
	res.RSSRatio = ratio(res.Ours.RSSKiB.Median, res.Upstream.RSSKiB.Median)
	return res, nil
}

// startAll starts the warm-up pair and then Starts pairs of containers,
// appending each to rs and its time to figs (warm-up excluded).
func (b *bench) startAll(ctx context.Context, f *fleet, figs map[string]*runningFigures, rs *[]*running) error {
	for round := 0; round <= b.cfg.Starts; round++ { // round 0 is the warm-up
		for _, k := range b.pair(round) {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, d, err := f.createStart(ctx, k, fmt.Sprintf("run-%s-%02d", k.Name, round))
			if r != nil {
				*rs = append(*rs, r)
			}
			if err != nil {
				return err
			}
			if round > 0 {
				figs[k.Name].StartSamplesMS = append(figs[k.Name].StartSamplesMS, ms(d))
			}
		}
	}
	return nil
}

// createStart creates and starts one container with shim k and returns it
// with the time of create+start. Building its rootfs is not timed. A
// container that was created is returned also on error, for stopAll.
func (f *fleet) createStart(ctx context.Context, k shimKind, id string) (*running, time.Duration, error) {
	rootfs := filepath.Join(f.d.Dir, "running", id, "rootfs")
	if err := harness.BuildRootfs(rootfs, f.b.cfg.Busybox); err != nil {
		return nil, 0, fmt.Errorf("rootfs of %s: %w", id, err)
	}
	client := f.d.Client()
	if client == nil {
		return nil, 0, errors.New("containerd is not running")
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(ctx, f.ns), 60*time.Second)
	defer cancel()

	t := time.Now()
	ctr, err := client.NewContainer(ctx, id,
		containerd.WithRuntime(k.Runtime, nil),
		containerd.WithNewSpec(oci.WithDefaultPathEnv, oci.WithProcessArgs(runningArgs...), oci.WithHostname(id)))
	if err != nil {
		return nil, 0, fmt.Errorf("create %s: %w", id, err)
	}
	r := &running{k: k, ns: f.ns, ctr: ctr}
	r.task, err = ctr.NewTask(ctx, cio.NullIO, containerd.WithRootFS([]mount.Mount{{
		Type: "bind", Source: rootfs, Options: []string{"rbind", "rw"},
	}}))
	if err != nil {
		return r, 0, fmt.Errorf("create task %s: %w", id, err)
	}
	if err := r.task.Start(ctx); err != nil {
		return r, 0, fmt.Errorf("start %s: %w", id, err)
	}
	d := time.Since(t)
	if err := r.record(id); err != nil {
		return r, 0, err
	}
	return r, d, nil
}

// record finds the container's init and its shim (the init's parent, whose
// command line names the container).
func (r *running) record(id string) error {
	var err error
	if r.init, err = harness.RecordProc(int(r.task.Pid())); err != nil {
		return fmt.Errorf("init of %s: %w", id, err)
	}
	ppid, err := parentOf(r.init.Pid)
	if err != nil {
		return fmt.Errorf("shim of %s: %w", id, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid))
	if err != nil || !strings.Contains(string(cmdline), "\x00-id\x00"+id+"\x00") {
		return fmt.Errorf("parent %d of init %d is not the shim of %s (%v)", ppid, r.init.Pid, id, err)
	}
	if r.shim, err = harness.RecordProc(ppid); err != nil {
		return fmt.Errorf("shim of %s: %w", id, err)
	}
	return nil
}

// servedBy names the binary of the shim process pid: the name of a shim
// in the daemon's bin directory, else its path.
func servedBy(d *harness.Daemon, pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return "unknown"
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	if filepath.Dir(exe) == d.BinDir {
		return filepath.Base(exe)
	}
	return exe
}

// memFields are the fields sampled, in KiB: VmRSS, RssAnon and RssFile
// from /proc/<pid>/status, Pss from /proc/<pid>/smaps_rollup (resident
// memory with each shared page divided among the processes mapping it:
// the shims of one binary share its file pages).
var memFields = []string{"VmRSS", "RssAnon", "RssFile", "Pss"}

// sampleRSS samples every shim's memFields RSSSamples times, rssInterval
// apart, and returns for each field each shim's median, by shim kind.
func (b *bench) sampleRSS(rs []*running) (map[string]map[string][]float64, error) {
	samples := make([]map[string][]float64, len(rs))
	for round := 0; round < b.cfg.RSSSamples; round++ {
		if round > 0 {
			time.Sleep(rssInterval)
		}
		for i, r := range rs {
			kib, err := memSample(r.shim.Pid)
			if err != nil {
				return nil, fmt.Errorf("memory of shim %s: %w", r.shim, err)
			}
			if samples[i] == nil {
				samples[i] = map[string][]float64{}
			}
			for f, v := range kib {
				samples[i][f] = append(samples[i][f], v)
			}
		}
	}
	out := map[string]map[string][]float64{}
	for i, r := range rs {
		if out[r.k.Name] == nil {
			out[r.k.Name] = map[string][]float64{}
		}
		for _, f := range memFields {
			out[r.k.Name][f] = append(out[r.k.Name][f], medianOf(samples[i][f]))
		}
	}
	return out, nil
}

// stopAll stops and deletes every container through containerd (the
// shims' task service, not the delete command). A container containerd
// could not delete has its recorded init and shim killed so that nothing
// runs on; its error is returned.
func stopAll(rs []*running) error {
	var errs []error
	for _, r := range rs {
		if err := r.stop(); err != nil {
			errs = append(errs, err)
			for _, p := range []harness.Proc{r.init, r.shim} {
				if p.Pid > 0 {
					_ = p.Kill()
				}
			}
		}
	}
	return errors.Join(errs...)
}

func (r *running) stop() error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), r.ns), 30*time.Second)
	defer cancel()
	id := r.ctr.ID()
	if r.task != nil {
		if exit, err := r.task.Wait(ctx); err == nil {
			if err := r.task.Kill(ctx, syscall.SIGKILL); err == nil {
				select {
				case <-exit:
				case <-ctx.Done():
					return fmt.Errorf("stop %s: no exit after SIGKILL", id)
				}
			}
		}
		if _, err := r.task.Delete(ctx); err != nil {
			return fmt.Errorf("delete task %s: %w", id, err)
		}
	}
	if err := r.ctr.Delete(ctx); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// memSample reads memFields of pid.
func memSample(pid int) (map[string]float64, error) {
	out := map[string]float64{}
	for _, file := range []string{"status", "smaps_rollup"} {
		if err := readKiB(fmt.Sprintf("/proc/%d/%s", pid, file), memFields, out); err != nil {
			return nil, err
		}
	}
	for _, f := range memFields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("no %s for pid %d", f, pid)
		}
	}
	return out, nil
}

// readKiB adds to out the fields (given in kB) of a /proc file.
func readKiB(path string, fields []string, out map[string]float64) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(data), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if !ok || !slices.Contains(fields, name) {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
		if err != nil {
			return fmt.Errorf("%s %q in %s: %w", name, v, path, err)
		}
		out[name] = n
	}
	return nil
}

// parentOf is the parent pid in /proc/<pid>/stat (fields counted after the
// last ')', as comm may hold anything).
func parentOf(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("stat of %d: malformed", pid)
	}
	return strconv.Atoi(f[1])
}

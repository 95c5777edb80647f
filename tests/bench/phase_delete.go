package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// deleteFigures is phase 1 for one shim.
type deleteFigures struct {
	LatencyMS summary   `json:"latency_ms"`
	SamplesMS []float64 `json:"samples_ms"`
	// Failures counts deletes that exited non-zero.
	Failures int `json:"failures"`
	// Residue is what the by-hand deletes left, over all tasks, containerd
	// still down (upstream's leaves the bundle to containerd).
	Residue string `json:"residue"`
	// ReportedMS is the duration our delete reports on its stderr
	// ("deleted in ..."): the delete path alone, in the binary. Empty for
	// upstream's shim.
	ReportedMS summary `json:"reported_ms"`
	reported   []float64
	// Report is the first delete's stderr.
	Report string `json:"report,omitempty"`
}

// deleteResult is phase 1: both shims, the ratio of the medians, and the
// per-step profile of ours.
type deleteResult struct {
	Ours     deleteFigures `json:"ours"`
	Upstream deleteFigures `json:"upstream"`
	Ratio    float64       `json:"ratio_median"`
	// RepeatMS is ours run again on each task it deleted (nothing left):
	// starting the binary and a delete path with nothing to do.
	RepeatMS summary `json:"ours_repeat_ms"`
	// ProfileWarm and ProfileCold are our delete path's steps, in this
	// process and in a fresh process per task.
	ProfileWarm stepProfile `json:"profile_ours_warm"`
	ProfileCold stepProfile `json:"profile_ours_cold"`
	// RuncStoppedMS is `runc delete --force` (as our kill step runs it) on
	// a container whose processes the harness killed first: the runtime's
	// own delete of a stopped container, the least our kill step costs.
	RuncStoppedMS summary `json:"runc_delete_stopped_ms"`
}

// deletePhase runs phase 1: DeleteTasks containers per shim and
// ProfileTasks more of ours for each profile, containerd stopped, every
// shim killed; then round by round the delete command run by hand for a
// task of each shim (in the order of the round) and one profile delete of
// each kind, so that all share the machine's conditions; then ours again
// on the tasks it deleted. It also returns the daemon's version.
func (b *bench) deletePhase(ctx context.Context) (res deleteResult, version string, err error) {
	f, err := b.newFleet(ctx, "delete")
	if err != nil {
		return res, "", err
	}
	version = f.d.Version
	defer func() { err = joinCleanup(err, f.close()) }()

	specs := b.deleteSpecs()
	progress("%s delete: starting %d containers", b.line.Name, len(specs))
	cs, err := f.run(ctx, specs)
	if err != nil {
		return res, version, err
	}
	if err := f.d.Stop(); err != nil {
		return res, version, fmt.Errorf("stop containerd: %w", err)
	}
	if err := killShims(cs); err != nil {
		return res, version, err
	}
	tasks := map[string][]*harness.Container{}
	for i, s := range specs {
		tasks[s.Kind] = append(tasks[s.Kind], cs[i])
	}
	progress("%s delete: %d dead tasks per shim, deleting by hand", b.line.Name, b.cfg.DeleteTasks)
	if err := b.deleteRounds(ctx, tasks, &res); err != nil {
		return res, version, err
	}
	res.RepeatMS = repeatDeletes(ctx, tasks[b.ours.Name])
	return res, version, nil
}

// deleteSpecs is phase 1's containers, each with its kind: a shim's name
// for the by-hand deletes, or one of profileKinds (all ours).
func (b *bench) deleteSpecs() []spec {
	var specs []spec
	for i := 0; i < max(b.cfg.DeleteTasks, b.cfg.ProfileTasks); i++ {
		if i < b.cfg.DeleteTasks {
			for _, k := range b.pair(i) {
				specs = append(specs, spec{ID: fmt.Sprintf("del-%s-%02d", k.Name, i), Shim: k, Kind: k.Name})
			}
		}
		if i < b.cfg.ProfileTasks {
			for _, kind := range profileKinds {
				specs = append(specs, spec{ID: fmt.Sprintf("%s-%02d", kind, i), Shim: b.ours, Kind: kind})
			}
		}
	}
	return specs
}

// profileKinds are the extra dead tasks of ours for the profile:
// deleted in-process, in a fresh process, and by runc alone once stopped.
var profileKinds = []string{"warm", "cold", "runc"}

// deleteRounds runs, round by round, the by-hand delete of one task of each
// shim (in the order of the round) and one profile delete of each kind,
// and fills res.
func (b *bench) deleteRounds(ctx context.Context, tasks map[string][]*harness.Container, res *deleteResult) error {
	p, err := newProfiler()
	if err != nil {
		return err
	}
	figs := map[string]*deleteFigures{b.ours.Name: &res.Ours, b.upstream.Name: &res.Upstream}
	for i := 0; i < max(b.cfg.DeleteTasks, b.cfg.ProfileTasks); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i < b.cfg.DeleteTasks {
			for _, k := range b.pair(i) {
				figs[k.Name].record(tasks[k.Name][i].RunDelete(ctx))
			}
		}
		if i < b.cfg.ProfileTasks {
			if err := p.round(ctx, tasks, i); err != nil {
				return err
			}
		}
	}
	for _, k := range []shimKind{b.ours, b.upstream} {
		figs[k.Name].finish(ctx, tasks[k.Name])
	}
	res.Ratio = ratio(res.Ours.LatencyMS.Median, res.Upstream.LatencyMS.Median)
	res.ProfileWarm, res.ProfileCold = summarizeSteps(p.warm), summarizeSteps(p.cold)
	res.RuncStoppedMS = summarize(p.runcMS)
	return nil
}

// round runs the i-th profile delete of each kind.
func (p *profiler) round(ctx context.Context, tasks map[string][]*harness.Container, i int) error {
	p.deleteWarm(ctx, tasks["warm"][i])
	if err := p.deleteCold(ctx, tasks["cold"][i]); err != nil {
		return err
	}
	return p.deleteRunc(ctx, tasks["runc"][i])
}

// record adds one by-hand delete.
func (f *deleteFigures) record(r harness.DeleteResult) {
	f.SamplesMS = append(f.SamplesMS, ms(r.Duration))
	if r.ExitCode != 0 {
		f.Failures++
		progress("  delete exited %d: %s", r.ExitCode, strings.TrimSpace(r.Stderr))
	}
	if f.Report == "" {
		f.Report = r.Stderr
	}
	if m := reportedDur.FindStringSubmatch(r.Stderr); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			f.reported = append(f.reported, ms(d))
		}
	}
}

// finish summarises the samples and takes the residue of cs.
func (f *deleteFigures) finish(ctx context.Context, cs []*harness.Container) {
	f.LatencyMS = summarize(f.SamplesMS)
	f.ReportedMS = summarize(f.reported)
	var all harness.Residue
	for _, c := range cs {
		all = append(all, c.Residue(ctx, false)...)
	}
	f.Residue = all.Summary()
}

// repeatDeletes runs the delete again on each task of cs and summarises
// the durations of those that exited 0.
func repeatDeletes(ctx context.Context, cs []*harness.Container) summary {
	var xs []float64
	for _, c := range cs {
		if r := c.RunDelete(ctx); r.ExitCode == 0 {
			xs = append(xs, ms(r.Duration))
		}
	}
	return summarize(xs)
}

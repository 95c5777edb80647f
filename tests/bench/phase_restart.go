package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/tests/harness"
)

// Bounds of the restart phase; none is a figure.
const (
	// bundlesTimeout bounds the wait for every bundle to go after the
	// restart; a run that hits it reports the bundles left.
	bundlesTimeout = 3 * time.Minute
	// bundlesPoll is how often the bundles are checked: the resolution of
	// the cleanup time.
	bundlesPoll = 5 * time.Millisecond
	// settleTimeout bounds the wait for the residue to go once every
	// bundle is gone.
	settleTimeout = 5 * time.Second
)

// restartFigures is one restart with N dead tasks of one shim.
type restartFigures struct {
	// CleanupMS is the time from the daemon's start until every bundle is
	// gone; the time until the last one when some never go.
	CleanupMS float64 `json:"cleanup_ms"`
	// ServingMS is the time from the daemon's start until it served (its
	// start-up cleans up dead shims before serving).
	ServingMS float64 `json:"serving_ms"`
	// BundlesLeft counts bundles still there at bundlesTimeout.
	BundlesLeft int `json:"bundles_left"`
	// Residue is harness.Residue over every task once settled; ResidueCount
	// its number of leftovers.
	Residue      string `json:"residue"`
	ResidueCount int    `json:"residue_count"`
	// Resources is the machine with the N containers running.
	Resources resources `json:"resources_with_n_running"`
	// Log is where the time went, from containerd's log of the restart.
	Log restartLog `json:"containerd_log"`
	// LogFile is a copy of containerd's log of the restart.
	LogFile string `json:"containerd_log_file,omitempty"`
}

// restartResult is one N for both shims.
type restartResult struct {
	N        int            `json:"n"`
	Ours     restartFigures `json:"ours"`
	Upstream restartFigures `json:"upstream"`
	Ratio    float64        `json:"ratio_cleanup"`
}

// restartPhase runs phase 2 for n dead tasks, each shim on a daemon of its
// own, in the order of round.
func (b *bench) restartPhase(ctx context.Context, n, round int) (restartResult, error) {
	res := restartResult{N: n}
	figs := map[string]*restartFigures{b.ours.Name: &res.Ours, b.upstream.Name: &res.Upstream}
	for _, k := range b.pair(round) {
		fig, err := b.restartOnce(ctx, n, k)
		*figs[k.Name] = fig
		if err != nil {
			return res, fmt.Errorf("restart with %d dead tasks of %s: %w", n, k.Name, err)
		}
	}
	res.Ratio = ratio(res.Ours.CleanupMS, res.Upstream.CleanupMS)
	return res, nil
}

// restartOnce starts n containers with shim k, kills containerd, kills
// every shim while it is down, starts containerd again and times the
// cleanup it runs at start-up.
func (b *bench) restartOnce(ctx context.Context, n int, k shimKind) (fig restartFigures, err error) {
	f, err := b.newFleet(ctx, fmt.Sprintf("r%d-%s", n, k.Name))
	if err != nil {
		return fig, err
	}
	defer func() { err = joinCleanup(err, f.close()) }()

	if err := checkResources(n); err != nil {
		return fig, err
	}
	specs := make([]spec, n)
	for i := range specs {
		specs[i] = spec{ID: fmt.Sprintf("r-%s-%03d", k.Name, i), Shim: k}
	}
	progress("%s restart: N=%d %s: starting %d containers", b.line.Name, n, k.Name, n)
	cs, err := f.run(ctx, specs)
	if err != nil {
		return fig, err
	}
	fig.Resources = sampleResources()
	if err := f.d.Kill(); err != nil {
		return fig, fmt.Errorf("kill containerd: %w", err)
	}
	if err := killShims(cs); err != nil {
		return fig, err
	}
	progress("%s restart: N=%d %s: containerd restarting with %d dead tasks", b.line.Name, n, k.Name, n)
	_, logOff := f.d.LogSince(0)
	cleanup, serving, left, err := timeRestart(ctx, f.d, cs)
	if err != nil {
		return fig, err
	}
	log, _ := f.d.LogSince(logOff)
	fig.Log = parseRestartLog(log)
	fig.LogFile = b.saveLog(fmt.Sprintf("restart%d-%s", n, k.Name), log)
	fig.CleanupMS, fig.ServingMS, fig.BundlesLeft = ms(cleanup), ms(serving), left
	r := settledResidue(ctx, cs)
	fig.Residue, fig.ResidueCount = r.Summary(), len(r)
	return fig, nil
}

// saveLog writes log next to the result file, as
// bench-logs/containerd-<line>-<what>.log, and returns its path ("" when it
// could not be written: the log is context, not a figure).
func (b *bench) saveLog(what, log string) string {
	dir := filepath.Join(filepath.Dir(b.cfg.Out), "bench-logs")
	p := filepath.Join(dir, "containerd-"+b.line.Name+"-"+what+".log")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ""
	}
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		return ""
	}
	return p
}

// timeRestart starts the daemon and returns the time from its start until
// every bundle of cs is gone (or until bundlesTimeout, with the number
// left), and the time until it served.
func timeRestart(ctx context.Context, d *harness.Daemon, cs []*harness.Container) (cleanup, serving time.Duration, left int, err error) {
	type gone struct {
		at   time.Time
		left int
	}
	done := make(chan gone, 1)
	start := time.Now()
	go func() {
		deadline := start.Add(bundlesTimeout)
		for {
			left := bundlesLeft(cs)
			now := time.Now()
			if left == 0 || now.After(deadline) || ctx.Err() != nil {
				done <- gone{now, left}
				return
			}
			time.Sleep(bundlesPoll)
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, harness.StartTimeout+bundlesTimeout)
	defer cancel()
	if err := d.Start(sctx); err != nil {
		<-done
		return 0, 0, 0, fmt.Errorf("restart containerd: %w", err)
	}
	serving = time.Since(start)
	g := <-done
	return g.at.Sub(start), serving, g.left, nil
}

// bundlesLeft counts the bundles of cs still there, under their own name
// or containerd's ".<id>" name of a removal under way.
func bundlesLeft(cs []*harness.Container) int {
	n := 0
	for _, c := range cs {
		dotted := filepath.Join(filepath.Dir(c.Bundle), "."+filepath.Base(c.Bundle))
		for _, p := range []string{c.Bundle, dotted} {
			if _, err := os.Lstat(p); err == nil {
				n++
				break
			}
		}
	}
	return n
}

// settledResidue polls (bounded by settleTimeout) until nothing of cs is
// left, containerd's tasks included, and returns what was left last.
func settledResidue(ctx context.Context, cs []*harness.Container) harness.Residue {
	var all harness.Residue
	harness.Poll(settleTimeout, 50*time.Millisecond, func() bool {
		all = nil
		for _, c := range cs {
			all = append(all, c.Residue(ctx, true)...)
		}
		return len(all) == 0
	})
	return all
}

package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"golang.org/x/sys/unix"
)

// EnvMetricsDir names the directory of the Prometheus textfile-collector
// file. Unset or empty: no metrics are written.
const EnvMetricsDir = "CONTAINERD_SHIM_ROBUST_METRICS_DIR"

// Files in the metrics directory.
const (
	// MetricsFile is what node_exporter's textfile collector reads.
	MetricsFile = "containerd_shim_robust.prom"
	// metricsStateFile holds the counters between processes (JSON).
	metricsStateFile = "containerd_shim_robust.state.json"
	// metricsLockFile serialises writers with flock.
	metricsLockFile = ".containerd_shim_robust.lock"
)

// metricsLockWait bounds the wait for another writer: a delete run by
// containerd must finish well inside containerd's 5 s.
const metricsLockWait = time.Second

// Names of the metrics, all prefixed "containerd_shim_robust_".
const (
	metricDeletes     = "containerd_shim_robust_deletes_total"
	metricStepsFailed = "containerd_shim_robust_delete_steps_failed_total"
	metricDuration    = "containerd_shim_robust_delete_duration_seconds"
	metricGCRuns      = "containerd_shim_robust_gc_runs_total"
	metricGCLastRun   = "containerd_shim_robust_gc_last_run_timestamp_seconds"
	metricGCTasks     = "containerd_shim_robust_gc_tasks"
	metricGCOldest    = "containerd_shim_robust_gc_oldest_orphan_age_seconds"
	metricResidue     = "containerd_shim_robust_residue_found"
)

// durationBuckets are the upper bounds of the delete duration histogram:
// containerd allows 5 s for the whole delete.
var durationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// steps are the delete path's steps, as metrics label them.
var steps = append(append([]string{}, deletion.Steps...), deletion.StepSandbox)

// Metrics writes the Prometheus textfile-collector file in Dir. Every
// update takes an exclusive flock on a lock file in Dir, reads the counters
// from a state file there (so that they add up across processes), applies
// the change, and writes the state file and MetricsFile each through a
// temporary file and a rename, so a reader never sees half a file. A state
// file that is missing or cannot be decoded is started afresh (counters
// restart at 0, which Prometheus treats as a counter reset). The lock wait
// is bounded (1 s); an update that cannot take the lock is an error and
// changes nothing. Every file is opened relative to the directory, never
// through a symbolic link, and a directory owned by another user than root
// is refused (see update).
type Metrics struct {
	Dir string
}

// MetricsFromEnv returns the Metrics of EnvMetricsDir, nil when it is unset.
func MetricsFromEnv() *Metrics {
	dir := os.Getenv(EnvMetricsDir)
	if dir == "" {
		return nil
	}
	return &Metrics{Dir: dir}
}

// metricsState is the state file: every counter and gauge, by label.
type metricsState struct {
	Version int `json:"version"`
	// Deletes by "trigger/result".
	Deletes     map[string]float64 `json:"deletes"`
	StepsFailed map[string]float64 `json:"steps_failed"`
	Duration    histogram          `json:"delete_duration"`
	GCRuns      map[string]float64 `json:"gc_runs"`
	GCLastRun   float64            `json:"gc_last_run"`
	// GCTasks, GCOldest and Residue are from the last gc.
	GCTasks  map[string]float64 `json:"gc_tasks"`
	GCOldest float64            `json:"gc_oldest_orphan_age"`
	Residue  map[string]float64 `json:"residue"`
}

const metricsStateVersion = 1

// histogram counts observations per bucket (not cumulative); Counts has one
// more entry than Bounds, for +Inf.
type histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"`
}

func (h *histogram) observe(v float64) {
	if !sameBounds(h.Bounds, durationBuckets) || len(h.Counts) != len(durationBuckets)+1 {
		*h = histogram{Bounds: append([]float64(nil), durationBuckets...), Counts: make([]uint64, len(durationBuckets)+1)}
	}
	i := sort.SearchFloat64s(h.Bounds, v) // first bound >= v
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

func sameBounds(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// RecordDelete counts one delete: by trigger and result, its failed steps,
// and its duration (deletes that did not run, ResultRefused, have no
// duration). A nil Metrics records nothing.
func (m *Metrics) RecordDelete(rec DeleteRecord) error {
	if m == nil {
		return nil
	}
	return m.update(func(s *metricsState) {
		s.Deletes[rec.Trigger+"/"+string(rec.Result)]++
		for _, st := range rec.Steps {
			if st.Outcome == deletion.OutcomeFailed {
				s.StepsFailed[st.Step]++
			}
		}
		if rec.Result != ResultRefused {
			s.Duration.observe(rec.DurationSeconds)
		}
	})
}

// RecordGC sets the gauges of a gc run (tasks by status, the oldest
// orphan's age, residue by kind) and counts the run by mode ("sweep" or
// "dry-run"). Its deletes are recorded one by one with RecordDelete. A nil
// Metrics records nothing.
func (m *Metrics) RecordGC(g *GCReport) error {
	if m == nil {
		return nil
	}
	return m.update(func(s *metricsState) {
		mode := "sweep"
		if g.DryRun {
			mode = "dry-run"
		}
		s.GCRuns[mode]++
		s.GCLastRun = float64(g.Started.UnixNano()) / 1e9
		s.GCTasks = map[string]float64{}
		for _, t := range g.Tasks {
			s.GCTasks[string(t.Status)]++
		}
		s.GCOldest = g.OldestOrphan.Seconds()
		s.Residue = map[string]float64{}
		for _, r := range g.Residue {
			s.Residue[r.Kind]++
		}
	})
}

// update applies change to the state under the lock and rewrites both files.
// Every file is opened relative to the metrics directory's descriptor and
// never through a symbolic link: the directory may be one an exporter's
// user can write in, and a link planted there must not make a delete run by
// root create or overwrite a file elsewhere (/etc/nologin).
func (m *Metrics) update(change func(*metricsState)) error {
	dir, err := openMetricsDir(m.Dir)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer dir.Close()
	dirfd := int(dir.Fd())
	unlock, err := lockFile(dirfd, m.Dir, metricsLockFile, metricsLockWait)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer unlock()

	s := readMetricsState(dirfd, metricsStateFile)
	change(s)
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := writeAtomic(dirfd, m.Dir, metricsStateFile, data); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := writeAtomic(dirfd, m.Dir, MetricsFile, []byte(s.render())); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// openMetricsDir creates the metrics directory if missing and opens it. A
// directory owned by another user than root (or this process's user) is
// refused: its owner could swap what it holds between our checks.
func openMetricsDir(path string) (*os.File, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	dir := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		dir.Close()
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		dir.Close()
		return nil, fmt.Errorf("directory %s is owned by uid %d, not by root: refused (give the exporter read access to a directory root owns)", path, st.Uid)
	}
	return dir, nil
}

// maxMetricsState bounds what is read of the state file.
const maxMetricsState = 1 << 20

// openRegularAt opens name in dirfd without following a symbolic link or
// blocking on a FIFO, and checks that it is a regular file.
func openRegularAt(dirfd int, dirPath, name string, flags int, perm uint32) (*os.File, error) {
	p := filepath.Join(dirPath, name)
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: refused", p)
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s): refused", p, fi.Mode().Type())
	}
	return f, nil
}

// readMetricsState reads the state file name in dirfd; missing, not a
// regular file, too large or undecodable means a fresh state.
func readMetricsState(dirfd int, name string) *metricsState {
	s := &metricsState{}
	if f, err := openRegularAt(dirfd, ".", name, unix.O_RDONLY, 0); err == nil {
		data, err := io.ReadAll(io.LimitReader(f, maxMetricsState+1))
		f.Close()
		if err == nil && len(data) <= maxMetricsState {
			if json.Unmarshal(data, s) != nil || s.Version != metricsStateVersion {
				s = &metricsState{}
			}
		}
	}
	s.Version = metricsStateVersion
	for _, mp := range []*map[string]float64{&s.Deletes, &s.StepsFailed, &s.GCRuns, &s.GCTasks, &s.Residue} {
		if *mp == nil {
			*mp = map[string]float64{}
		}
	}
	return s
}

// lockFile takes an exclusive flock on name in dirfd (created if missing,
// never through a symbolic link), waiting at most wait; unlock releases it.
func lockFile(dirfd int, dirPath, name string, wait time.Duration) (unlock func(), err error) {
	f, err := openRegularAt(dirfd, dirPath, name, unix.O_CREAT|unix.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	path := f.Name()
	deadline := time.Now().Add(wait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: still held by another writer after %s", path, wait)
		}
		time.Sleep(delay)
	}
}

// writeAtomic writes data to name in dirfd through a temporary file there
// (a dot file not ending in .prom, which the textfile collector ignores;
// created O_EXCL, never through a link), then renamed over name: a reader
// sees the old file or the new one, never half of one, and a symbolic link
// at name is replaced, not followed. It does not fsync (a delete run by
// containerd must not wait on a busy disk): after a machine crash the
// state file may be lost, and the counters restart from 0, which
// Prometheus treats as a counter reset.
func writeAtomic(dirfd int, dirPath, name string, data []byte) error {
	path := filepath.Join(dirPath, name)
	var (
		f   *os.File
		tmp string
		err error
	)
	for range 100 {
		tmp = fmt.Sprintf(".%s.tmp-%d", name, rand.Uint32())
		if f, err = openRegularAt(dirfd, dirPath, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644); !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dirfd, tmp, dirfd, name)
	}
	if err != nil {
		if rerr := unix.Unlinkat(dirfd, tmp, 0); rerr != nil && !errors.Is(rerr, unix.ENOENT) {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// render is the state in Prometheus text exposition format (version
// 0.0.4). Every known label value is written, zero or not, so that rate()
// and absent() work from the first scrape.
func (s *metricsState) render() string {
	var b strings.Builder
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	sample := func(name string, labels []string, v float64) {
		b.WriteString(name)
		if len(labels) > 0 {
			b.WriteString("{")
			for i := 0; i < len(labels); i += 2 {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
			}
			b.WriteString("}")
		}
		b.WriteString(" " + formatValue(v) + "\n")
	}

	family(metricDeletes, "counter", "Deletes run by the robust shim's delete path, by trigger (containerd, manual, gc) and result (deleted, incomplete, left, error, refused).")
	for _, tr := range withExtra(Triggers, keysBefore(s.Deletes)) {
		for _, r := range withExtra(resultNames(), keysAfter(s.Deletes, tr)) {
			sample(metricDeletes, []string{"trigger", tr, "result", r}, s.Deletes[tr+"/"+r])
		}
	}
	family(metricStepsFailed, "counter", "Steps of the delete path that failed, by step.")
	for _, st := range withExtra(steps, s.StepsFailed) {
		sample(metricStepsFailed, []string{"step", st}, s.StepsFailed[st])
	}
	family(metricDuration, "histogram", "Duration of the deletes that ran (every result but refused).")
	h := s.Duration
	if !sameBounds(h.Bounds, durationBuckets) || len(h.Counts) != len(durationBuckets)+1 {
		h = histogram{Bounds: durationBuckets, Counts: make([]uint64, len(durationBuckets)+1)}
	}
	var cum uint64
	for i, le := range h.Bounds {
		cum += h.Counts[i]
		sample(metricDuration+"_bucket", []string{"le", formatValue(le)}, float64(cum))
	}
	sample(metricDuration+"_bucket", []string{"le", "+Inf"}, float64(h.Count))
	sample(metricDuration+"_sum", nil, h.Sum)
	sample(metricDuration+"_count", nil, float64(h.Count))

	family(metricGCRuns, "counter", "Runs of gc, by mode (sweep, dry-run).")
	for _, mode := range withExtra([]string{"sweep", "dry-run"}, s.GCRuns) {
		sample(metricGCRuns, []string{"mode", mode}, s.GCRuns[mode])
	}
	family(metricGCLastRun, "gauge", "Start of the last gc run, in seconds since the epoch (0: never).")
	sample(metricGCLastRun, nil, s.GCLastRun)
	family(metricGCTasks, "gauge", "Task directories seen by the last gc, by status (live, orphan, young, skipped).")
	for _, st := range withExtra(gcStatusNames(), s.GCTasks) {
		sample(metricGCTasks, []string{"status", st}, s.GCTasks[st])
	}
	family(metricGCOldest, "gauge", "Age of the oldest orphaned task directory (dead shim) seen by the last gc, by its mtime, in seconds (0: none).")
	sample(metricGCOldest, nil, s.GCOldest)
	family(metricResidue, "gauge", "Residue outside task directories attributed to dead tasks by the last gc, by kind (reported only, never deleted).")
	for _, k := range withExtra(ResidueKinds, s.Residue) {
		sample(metricResidue, []string{"kind", k}, s.Residue[k])
	}
	return b.String()
}

func resultNames() []string {
	out := make([]string, len(Results))
	for i, r := range Results {
		out[i] = string(r)
	}
	return out
}

func gcStatusNames() []string {
	out := make([]string, len(GCStatuses))
	for i, s := range GCStatuses {
		out[i] = string(s)
	}
	return out
}

// keysBefore returns the "a" parts of the "a/b" keys of m, as a set.
func keysBefore(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k := range m {
		a, _, _ := strings.Cut(k, "/")
		out[a] = 1
	}
	return out
}

// keysAfter returns the "b" parts of the "a/b" keys of m whose a is a.
func keysAfter(m map[string]float64, a string) map[string]float64 {
	out := map[string]float64{}
	for k := range m {
		if x, y, ok := strings.Cut(k, "/"); ok && x == a {
			out[y] = 1
		}
	}
	return out
}

// withExtra is known followed by the keys of m not in known, sorted: label
// values from an older or newer binary's state file are kept.
func withExtra(known []string, m map[string]float64) []string {
	out := append([]string(nil), known...)
	seen := map[string]bool{}
	for _, k := range known {
		seen[k] = true
	}
	var extra []string
	for k := range m {
		if !seen[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// escapeLabel escapes a label value for the text format.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

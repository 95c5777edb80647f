package harness

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ResultsDirEnv names the directory where the suites write their results
// in machine-readable form, for tools/results (`make results`) to render
// docs/results.md from. Unset or empty: nothing is written. A relative path
// is taken from the repository's root.
const ResultsDirEnv = "RESULTS_DIR"

// ResultsRun is the first line of a results file: which suite ran, on
// which containerd, from which commit, and with which command.
type ResultsRun struct {
	Kind       string    `json:"kind"` // "run"
	Suite      string    `json:"suite"`
	Containerd string    `json:"containerd"` // version, without a leading "v"
	Binary     string    `json:"containerd_binary"`
	Commit     string    `json:"commit"` // short hash, "-dirty" when the work tree differs from it
	Command    string    `json:"command"`
	Started    time.Time `json:"started"`
	Finished   time.Time `json:"finished"`
	Failed     bool      `json:"failed"` // the suite's exit status was not 0
}

// ResultsRow is one cell of a suite's side-by-side table: what one shim
// left behind in one case.
type ResultsRow struct {
	Kind    string `json:"kind"` // "row"
	Case    string `json:"case"`
	Shim    string `json:"shim"` // "upstream" or "ours"
	Outcome string `json:"outcome"`
}

// ResultsFigure is one named figure of a suite (e.g. interrupt's "random
// kills inside a delete").
type ResultsFigure struct {
	Kind  string `json:"kind"` // "figure"
	Name  string `json:"name"`
	Value string `json:"value"`
}

// NewResultsRun describes a run of suite (the directory under tests/) on
// the containerd binary of the given version; Started is now.
func NewResultsRun(suite, repoRoot, binary, version string) ResultsRun {
	return ResultsRun{
		Kind:       "run",
		Suite:      suite,
		Containerd: strings.TrimPrefix(version, "v"),
		Binary:     binary,
		Commit:     commitOf(repoRoot),
		Command:    suiteCommand(suite, binary),
		Started:    time.Now().UTC(),
	}
}

// WriteResults writes run and then each record (ResultsRow or
// ResultsFigure), one JSON document a line, into
// $RESULTS_DIR/<suite>-<containerd version>.jsonl, replacing that file. It
// does nothing and returns "" when RESULTS_DIR is unset; else it returns
// the file's path.
func WriteResults(repoRoot string, run ResultsRun, records []any) (string, error) {
	dir := os.Getenv(ResultsDirEnv)
	if dir == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(repoRoot, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	run.Finished = time.Now().UTC()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(run); err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return "", fmt.Errorf("results: %w", err)
		}
	}
	name := filepath.Join(dir, run.Suite+"-"+unsafeFileChars.ReplaceAllString(run.Containerd, "_")+".jsonl")
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	return name, nil
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// commitOf is the repository's HEAD (12 hex digits), with "-dirty" when
// tracked files differ from it; "unknown" without git.
func commitOf(repoRoot string) string {
	out, err := exec.Command("git", "-C", repoRoot, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", repoRoot, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		commit += "-dirty"
	}
	return commit
}

// suiteCommand is the command line that reproduces this run: the suite's
// package with the containerd binary and whatever narrowed the run (-run,
// -skip, E2E_ONLY, INTERRUPT_RANDOM).
func suiteCommand(suite, binary string) string {
	parts := []string{"E2E_CONTAINERD=" + binary}
	for _, k := range []string{"E2E_ONLY", "INTERRUPT_RANDOM"} {
		if v := os.Getenv(k); v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	parts = append(parts, "go test ./tests/"+suite+"/")
	for _, f := range []string{"run", "skip"} {
		if fl := flag.Lookup("test." + f); fl != nil && fl.Value.String() != "" {
			parts = append(parts, fmt.Sprintf("-%s '%s'", f, fl.Value.String()))
		}
	}
	return strings.Join(parts, " ")
}

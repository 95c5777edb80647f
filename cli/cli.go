package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/deletion"
	"github.com/shimrobust/containerd-shim-runc-v2-robust/ops"
)

// EnvStateDir names containerd's runtime v2 task state directory for a
// delete by hand without -bundle and for gc, when --state-dir is not given.
// Unset or empty: ops.DefaultStateDir.
const EnvStateDir = "CONTAINERD_SHIM_ROBUST_STATE_DIR"

// ttrpcAddressEnv is set by containerd for every shim command it runs.
const ttrpcAddressEnv = "TTRPC_ADDRESS"

// Our flags on the delete command line, next to the shim framework's.
const (
	flagStateDir = "state-dir"
	flagFormat   = "format"
	flagForce    = "force"
)

// Report formats.
const (
	formatText = "text"
	formatJSON = "json"
)

// Exit statuses of `delete` run by hand, `gc`, `install` and
// `uninstall`: ops' (see ops.ExitOK), from ops' one table of how a delete
// ended (ops.Result.ExitStatus). containerd's `delete` keeps the
// framework's: 0, or 1 with "name: error" on stderr.
const (
	ExitOK      = ops.ExitOK      // done (see ops.ExitOK)
	ExitFailed  = ops.ExitFailed  // a delete failed or left the task directory (see ops.ExitFailed)
	ExitUsage   = ops.ExitUsage   // bad flags, invalid namespace or id: nothing touched
	ExitRefused = ops.ExitRefused // delete by hand: the shim is alive, no -force: nothing touched
)

// deleteFlags are our flags of the delete command.
type deleteFlags struct {
	stateDir string
	format   string
	force    bool
}

// register defines the flags on fs.
func (f *deleteFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.stateDir, flagStateDir, "", "delete without -bundle from outside the task directory: containerd's task state directory, the task is <dir>/<namespace>/<id> (default $"+EnvStateDir+", else "+ops.DefaultStateDir+")")
	fs.StringVar(&f.format, flagFormat, formatText, "report format, text or json; by hand, json replaces the DeleteResponse on stdout; for containerd (-address), the report is on stderr either way")
	fs.BoolVar(&f.force, flagForce, false, "delete by hand even when the task's shim is alive: the shim (when proven to be the task's) and its container are killed")
}

// resolveStateDir is the flag's value, else $EnvStateDir, else
// ops.DefaultStateDir.
func resolveStateDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv(EnvStateDir); v != "" {
		return v
	}
	return ops.DefaultStateDir
}

// commandLine is the shim's command line: the flags of upstream's shim
// framework (pkg/shim parseFlags in containerd 2.x, runtime/v2/shim in
// 1.6/1.7), ours, and the action.
type commandLine struct {
	namespace, id, bundle, address, socket, debugSocket, publishBinary string
	debug, version, info                                               bool
	deleteFlags

	action string
	// args is the command line with the action moved after every flag,
	// which is where Go's flag package stops reading flags.
	args []string
}

// parseCommandLine parses args (without the program name) as the shim
// framework does, and also accepts flags after the action ("delete
// --format json"), which args then lists before it. An error means the
// framework should see args unchanged (it will report them itself).
func parseCommandLine(args []string) (*commandLine, error) {
	cl := &commandLine{}
	fs := flag.NewFlagSet("containerd-shim-runc-v2-robust", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&cl.debug, "debug", false, "")
	fs.BoolVar(&cl.version, "v", false, "")
	fs.BoolVar(&cl.version, "version", false, "")
	fs.BoolVar(&cl.info, "info", false, "")
	fs.StringVar(&cl.debugSocket, "debug-socket", "", "")
	fs.StringVar(&cl.namespace, "namespace", "", "")
	fs.StringVar(&cl.id, "id", "", "")
	fs.StringVar(&cl.socket, "socket", "", "")
	fs.StringVar(&cl.bundle, "bundle", "", "")
	fs.StringVar(&cl.address, "address", "", "")
	fs.StringVar(&cl.publishBinary, "publish-binary", "", "")
	cl.deleteFlags.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cl.args = args
	rest := fs.Args()
	if len(rest) == 0 {
		return cl, nil
	}
	cl.action = rest[0]
	before, after := args[:len(args)-len(rest)], rest[1:]
	if len(after) == 0 {
		return cl, nil
	}
	for _, a := range before {
		if a == "--" {
			return cl, nil // everything after "--" is positional: leave it
		}
	}
	if err := fs.Parse(after); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q after %q", fs.Arg(0), cl.action)
	}
	cl.args = append(append(append([]string{}, before...), after...), cl.action)
	return cl, nil
}

// byContainerd reports whether containerd runs the command: it always
// passes -address and sets TTRPC_ADDRESS.
func (cl *commandLine) byContainerd() bool {
	return cl.address != "" || os.Getenv(ttrpcAddressEnv) != ""
}

func checkFormat(f string) error {
	if f != formatText && f != formatJSON {
		return fmt.Errorf("--%s %q: want %s or %s", flagFormat, f, formatText, formatJSON)
	}
	return nil
}

// usage is the top-level help (-h).
func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage:
  %[1]s -namespace NS -id ID [-bundle DIR] [--state-dir DIR] [--force] [--format text|json] delete
      delete a task whose shim is dead (containerd runs this; so can you, from any directory)
  %[1]s gc [--config FILE] [--state-dir DIR] [--parallel N] [--older-than DURATION] [--dry-run] [--format text|json]
      delete every orphaned runc v2 task (see "%[1]s gc -h")
  %[1]s -v
      this binary's version and its delegate's

Every other command (start, -info, and the task service that start runs) is
executed by upstream's runc shim, the delegate: $%[2]s (an absolute
path), else %[3]s next to this binary, else on $PATH.

Flags of delete:
`, Name, delegate.EnvDelegate, delegate.BinaryName)
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.SetOutput(w)
	(&deleteFlags{}).register(fs)
	fs.PrintDefaults()
}

// runManualDelete is `delete` run by hand (no -address, no TTRPC_ADDRESS).
// The delete refuses a task whose shim is alive unless -force
// (deletion.RefuseLiveShim: decided under the task directory's lock); the
// refusal's record says what to do instead. It prints the record (text on
// stderr, or JSON on stdout in place of the DeleteResponse); ops.RunDelete
// records the metrics. The exit status is the record's
// (ops.DeleteRun.ExitStatus).
func runManualDelete(ctx context.Context, cl *commandLine, stdout, stderr io.Writer) int {
	if err := checkFormat(cl.format); err != nil {
		fmt.Fprintf(stderr, "delete: %v\n", err)
		return ExitUsage
	}
	if cl.namespace == "" || cl.id == "" {
		fmt.Fprintln(stderr, "delete: -namespace and -id are required")
		return ExitUsage
	}
	// -force: the shim, if it still exists and is proven to be the
	// task's, is killed too (deletion.KillLiveShim); without it a live or
	// hung shim makes the delete refuse (deletion.RefuseLiveShim).
	req := deletion.Request{Namespace: cl.namespace, ID: cl.id, Bundle: cl.bundle, StateDir: resolveStateDir(cl.stateDir)}
	if cl.force {
		req.LiveShim = deletion.KillLiveShim
	}
	run := ops.RunDelete(ctx, req, ops.TriggerManual, ops.MetricsFromEnv())
	rec := run.Record
	if rec.Result == ops.ResultRefused {
		rec.Error += fmt.Sprintf(": delete the task through containerd (ctr -n %s task delete --force %s), or pass -force to kill the container and remove its task directory under the live shim", req.Namespace, req.ID)
	}
	if cl.format == formatJSON {
		_, _ = stdout.Write(rec.JSON())
	} else {
		fmt.Fprint(stderr, rec.Text())
	}
	if run.MetricsErr != nil {
		fmt.Fprintf(stderr, "robust delete %s/%s: %v\n", req.Namespace, req.ID, run.MetricsErr)
	}
	code := run.ExitStatus()
	if code == ExitOK && cl.format == formatText {
		// What containerd would read; `> /dev/null` when run by hand.
		_, _ = stdout.Write(run.Report.Response().Marshal())
	}
	return code
}

// RunGC is the `gc` command: args are its flags (after the word "gc"). It
// prints the report on stdout (text, or JSON with --format json) and
// returns the exit status (ExitOK, ExitFailed, ExitUsage). The state
// directory is --state-dir, else $EnvStateDir, else containerd's `state`
// from --config (ops.ChooseStateDir). When stderr is a terminal it draws
// the deletes' progress there.
func RunGC(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts ops.GCOptions
	var stateDir, format, configPath string
	fs.StringVar(&stateDir, flagStateDir, "", "containerd's runtime v2 task state directory, or containerd's state directory that holds it (default $"+EnvStateDir+", else <state>/"+ops.TaskStateDirName+" with the state of --config, else "+ops.DefaultStateDir+")")
	fs.StringVar(&configPath, "config", ops.DefaultContainerdConfig, "containerd's configuration file, read for its state and root directories (version 1 to 4, and the files it imports); a missing default file means containerd's defaults")
	fs.IntVar(&opts.Parallel, "parallel", ops.DefaultParallel(), "deletes run at the same time, at least 1; the default is the number of CPUs")
	fs.StringVar(&opts.RuncRoot, "runc-root", ops.DefaultRuncRoot, "runc's root, scanned for residue (besides the roots named by the tasks' options.json)")
	fs.DurationVar(&opts.OlderThan, "older-than", ops.DefaultOlderThan, "only orphans whose task directory is older than this (by its mtime); whatever it says, one with no shim socket recorded yet is left until "+ops.CreationWindow.String()+" old (containerd may still be creating it), so 0s is safe")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "list what would be deleted and why; change nothing")
	fs.StringVar(&opts.Namespace, "namespace", "", "only this namespace (default: every namespace)")
	fs.StringVar(&format, flagFormat, formatText, "report format: text or json")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: %s gc [flags]

Deletes every orphaned runc v2 task (shim dead, task directory older than
--older-than) under the state directory, in every namespace, with the same
delete containerd runs, --parallel at a time; never touches a task whose
shim answers. Reports residue outside task directories (runc state,
cgroups) without deleting it. On a terminal, stderr shows the progress.
Exit status: 0 all deleted, 1 a delete failed or left something, 2 usage.

Flags:
`, filepath.Base(os.Args[0]))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gc: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	if err := checkFormat(format); err != nil {
		fmt.Fprintf(stderr, "gc: %v\n", err)
		return ExitUsage
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintf(stderr, "gc: %v\n", err)
		return ExitUsage
	}
	configGiven := false
	fs.Visit(func(f *flag.Flag) { configGiven = configGiven || f.Name == "config" })
	envDir := os.Getenv(EnvStateDir)
	var cfg *ops.ContainerdConfig
	if _, err := os.Stat(configPath); configGiven || !errors.Is(err, os.ErrNotExist) {
		c, err := ops.LoadContainerdConfig(configPath)
		switch {
		case err == nil:
			cfg = c
		case configGiven || (stateDir == "" && envDir == ""):
			fmt.Fprintf(stderr, "gc: --config: %v\n", err)
			return ExitUsage
		default:
			// Only the root check needed it: go on with containerd's defaults.
			fmt.Fprintf(stderr, "gc: ignoring %v\n", err)
		}
	}
	choice, err := ops.ChooseStateDir(stateDir, envDir, EnvStateDir, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "gc: %v\n", err)
		return ExitUsage
	}
	opts.StateDir, opts.StateDirFrom, opts.StateDirNote = choice.Dir, choice.From, choice.Note
	opts.Metrics = ops.MetricsFromEnv()
	var progress *ops.ProgressLine
	if f, ok := stderr.(*os.File); ok && !opts.DryRun {
		progress = ops.NewProgressLine(f)
		opts.Progress = progress.Func()
	}

	g := ops.GC(ctx, opts)
	progress.End()
	if format == formatJSON {
		_, _ = stdout.Write(g.JSON())
	} else {
		fmt.Fprint(stdout, g.Text())
	}
	return g.ExitStatus()
}

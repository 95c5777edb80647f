package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ErrReplaceShimBinary is --replace-shim-binary's refusal.
var ErrReplaceShimBinary = errors.New("--replace-shim-binary")

// Result says what install or uninstall did.
type Result struct {
	Changed   bool
	Restarted bool
	Files     []string // host's names of the files written or removed
}

// Install puts our shim into containerd's configuration (see the package
// doc) and, with ReplaceShimBinary, our binary in place of upstream's by a
// dpkg-divert. An error wrapping ErrConfig or ErrReplaceShimBinary:
// nothing was changed. Any other error after files were written: they
// were put back (the diversion removed, upstream's binary back, and
// containerd restarted again unless NoRestart); the error says what failed
// and whether the roll-back did.
func Install(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	if o.ReplaceShimBinary {
		if err := o.canReplace(); err != nil {
			return nil, err
		}
	}
	st, orig, err := o.readState()
	if err != nil {
		return nil, err
	}
	if st != nil && st.Main != o.Config {
		return nil, fmt.Errorf("%w: installed for %s already: uninstall first", ErrConfig, st.Main)
	}
	if st != nil && st.Diverted != "" && o.Mode != ModeDefault {
		return nil, fmt.Errorf("%w: installed with --replace-shim-binary (%s diverted): --mode %s needs uninstall first", ErrReplaceShimBinary, st.Diverted, o.Mode)
	}
	cv, err := o.containerdVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	p, err := o.plan(ctx, cv)
	if err != nil {
		return nil, err
	}
	var d *divertPlan
	if o.ReplaceShimBinary {
		if d, err = o.planDivert(ctx, st); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	mainChanged := string(p.MainAfter) != string(p.MainBefore)
	dropChanged := p.DropInOld == nil || string(p.DropInOld) != string(p.DropInData)
	divChanged := d != nil && d.Write
	if o.DryRun {
		fmt.Fprintf(o.Stdout, "containerd %s, configuration version %d, CRI plugin %s\n", cv, p.Version, p.Plugin)
		if mainChanged {
			fmt.Fprintf(o.Stdout, "--- would write %s:\n%s\n", p.Main, p.MainAfter)
		}
		if dropChanged {
			fmt.Fprintf(o.Stdout, "--- would write %s:\n%s\n", p.DropIn, p.DropInData)
		}
		switch {
		case divChanged && d.Add:
			fmt.Fprintf(o.Stdout, "--- would run dpkg-divert --local --rename --divert %s --add %s, and copy %s to %s\n", diverted(d.Path), d.Path, o.ShimPath, d.Path)
		case divChanged:
			fmt.Fprintf(o.Stdout, "--- would copy %s to %s (diverted already)\n", o.ShimPath, d.Path)
		}
		if !mainChanged && !dropChanged && !divChanged {
			fmt.Fprintln(o.Stdout, "installed already: nothing to write")
		}
		return res, nil
	}
	if st != nil && st.Diverted != "" && d == nil {
		fmt.Fprintf(o.Stdout, "%s stays diverted (an earlier install --replace-shim-binary): uninstall removes it\n", st.Diverted)
	}
	if !mainChanged && !dropChanged && !divChanged {
		fmt.Fprintf(o.Stdout, "installed already (%s): nothing changed\n", p.DropIn)
		return res, nil
	}
	// Record first, so that an interrupted install can be undone.
	ns := &state{Mode: o.Mode, Handler: o.Handler, Main: o.Config, MainMode: uint32(p.MainMode), DropIn: p.DropIn, CreatedDir: p.DirToMake}
	if st != nil {
		ns.CreatedDir = st.CreatedDir
		if st.MainWritten != "" {
			ns.MainWritten = st.MainWritten
		}
		ns.Diverted, ns.ShimWritten = st.Diverted, st.ShimWritten
	}
	if mainChanged {
		ns.MainWritten = sum(p.MainAfter)
		if orig == nil {
			orig = p.MainBefore
		}
	}
	if divChanged {
		ns.Diverted, ns.ShimWritten = d.Path, sum(d.Data)
	}
	if err := o.writeState(ns, orig); err != nil {
		return nil, err
	}
	undo := func() error {
		var errs []error
		if divChanged {
			if err := o.undoDivert(ctx, d); err != nil {
				// Keep the state: uninstall removes the diversion.
				return errors.Join(fmt.Errorf("removing the diversion of %s: %w (uninstall removes it)", d.Path, err), o.undoConfig(p, mainChanged))
			}
		}
		errs = append(errs, o.undoConfig(p, mainChanged))
		if st == nil {
			errs = append(errs, os.RemoveAll(o.host(o.StateDir)))
		} else {
			errs = append(errs, o.writeState(st, orig))
		}
		return errors.Join(errs...)
	}
	if mainChanged || dropChanged {
		if p.DirToMake != "" {
			if err := os.MkdirAll(o.host(p.DirToMake), 0o755); err != nil {
				return nil, errors.Join(err, undo())
			}
		}
		if err := writeFileAtomic(o.host(p.DropIn), p.DropInData, 0o644); err != nil {
			return nil, errors.Join(fmt.Errorf("writing %s: %w", p.DropIn, err), undo())
		}
		res.Files = append(res.Files, p.DropIn)
		if mainChanged {
			if err := writeFileAtomic(o.host(p.Main), p.MainAfter, p.MainMode); err != nil {
				return nil, errors.Join(fmt.Errorf("writing %s: %w", p.Main, err), undo())
			}
			res.Files = append(res.Files, p.Main)
		}
	}
	var checkErr error
	if divChanged {
		if err := o.applyDivert(ctx, d); err != nil {
			return nil, errors.Join(fmt.Errorf("replacing %s: %w", d.Path, err), undo())
		}
		res.Files = append(res.Files, d.Path)
		if d.Add {
			res.Files = append(res.Files, diverted(d.Path))
		}
		checkErr = o.checkDivert(ctx, d.Path)
	}
	res.Changed = true
	fmt.Fprintf(o.Stdout, "wrote %v (containerd %s, configuration version %d, CRI plugin %s, mode %s)\n", res.Files, cv, p.Version, p.Plugin, o.Mode)
	if checkErr == nil {
		checkErr = o.check(ctx, p, false)
	}
	if checkErr != nil {
		e := fmt.Errorf("checking what was written: %w", checkErr)
		uerr := undo()
		if uerr == nil && !o.NoRestart {
			uerr = o.restart(ctx)
		}
		if uerr != nil {
			return res, fmt.Errorf("%w; roll-back FAILED: %v", e, uerr)
		}
		return res, fmt.Errorf("%w; rolled back: containerd's files are as they were", e)
	}
	res.Restarted = !o.NoRestart
	return res, nil
}

// undoConfig puts containerd's files back as plan found them.
func (o *Options) undoConfig(p *Plan, mainChanged bool) error {
	var errs []error
	if mainChanged {
		errs = append(errs, writeFileAtomic(o.host(p.Main), p.MainBefore, p.MainMode))
	}
	if p.DropInOld != nil {
		errs = append(errs, writeFileAtomic(o.host(p.DropIn), p.DropInOld, 0o644))
	} else if err := os.Remove(o.host(p.DropIn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if p.DirToMake != "" {
		_ = os.Remove(o.host(p.DirToMake))
	}
	return errors.Join(errs...)
}

// check validates the written configuration (config dump shows the
// runtime) and, unless NoRestart, restarts containerd and checks it
// answers, our binary finds its delegate and, unless NoContainerCheck, a
// container starts with it (containerStarts).
func (o *Options) check(ctx context.Context, p *Plan, removed bool) error {
	m, err := o.dump(ctx)
	if err != nil {
		return fmt.Errorf("containerd config dump: %w", err)
	}
	if err := RuntimeIn(m, o.Mode, o.Handler, o.ShimPath, p.Setup, removed); err != nil {
		return fmt.Errorf("containerd config dump: %w", err)
	}
	if o.NoRestart {
		return nil
	}
	if err := o.restart(ctx); err != nil {
		return err
	}
	if err := o.answers(ctx); err != nil {
		return err
	}
	if !removed {
		if _, err := o.run(ctx, o.onHost(o.ShimPath, "-v")...); err != nil {
			return fmt.Errorf("our shim finds no delegate: %w", err)
		}
		if !o.NoContainerCheck {
			if err := o.containerStarts(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// RuntimeIn checks a `config dump` tree: for install (removed false) the
// runtime install configures is there; for uninstall, ours is gone.
func RuntimeIn(m map[string]any, mode Mode, handler, shim string, setup Setup, removed bool) error {
	name := handler
	var rts map[string]any
	for _, pl := range []string{PluginCRIv3, PluginCRIv2} {
		c := table(m, "plugins", pl, "containerd")
		if c == nil {
			continue
		}
		rts = table(c, "runtimes")
		if mode == ModeDefault {
			name, _ = c["default_runtime_name"].(string)
			if name == "" {
				name = "runc"
			}
		}
		break
	}
	rt, _ := rts[name].(map[string]any)
	ours := false
	if rt != nil {
		typ, _ := rt["runtime_type"].(string)
		path, _ := rt["runtime_path"].(string)
		ours = typ == RuntimeTypeRobust || (typ == RuntimeTypeRunc && path == shim)
	}
	switch {
	case removed && ours:
		return fmt.Errorf("runtime %s is still served by %s", name, shim)
	case !removed && !ours:
		return fmt.Errorf("runtime %s is not served by %s (%v)", name, shim, rt)
	}
	return nil
}

func (o *Options) restart(ctx context.Context) error {
	argv := o.RestartCommand
	if len(argv) == 0 {
		argv = []string{"systemctl", "restart", "containerd"}
		if o.HostRoot != "/" {
			argv = append([]string{"nsenter", "--target", "1", "--mount", "--"}, argv...)
		}
	}
	if _, err := o.run(ctx, argv...); err != nil {
		return fmt.Errorf("restarting containerd: %w", err)
	}
	return nil
}

// answers waits until containerd's socket accepts a connection.
func (o *Options) answers(ctx context.Context) error {
	deadline := time.Now().Add(o.Timeout)
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		c, err = net.DialTimeout("unix", o.host(o.Address), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("containerd does not answer on %s after %s: %w", o.Address, o.Timeout, err)
}

func (o *Options) writeState(s *state, orig []byte) error {
	dir := o.host(o.StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if orig != nil {
		if err := writeFileAtomic(filepath.Join(dir, originalFile), orig, 0o600); err != nil {
			return err
		}
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	return writeFileAtomic(filepath.Join(dir, stateFile), b, 0o600)
}

// Uninstall removes what Install wrote: our binary at a diverted
// upstream's path and the diversion (upstream's binary renamed back), the
// drop-in, and the main file's original bytes put back when install
// edited it and nobody changed it since (else it is left, and the error
// names it; so is our binary when changed since). Not installed: nothing
// to do. Then, unless NoRestart, containerd is restarted and checked.
func Uninstall(ctx context.Context, o Options) (*Result, error) {
	o.defaults()
	st, orig, err := o.readState()
	if err != nil {
		return nil, err
	}
	res := &Result{}
	if st == nil {
		fmt.Fprintln(o.Stdout, "not installed: nothing to remove")
		return res, nil
	}
	o.Mode, o.Handler, o.Config = st.Mode, st.Handler, st.Main
	var restore bool
	if st.MainWritten != "" {
		cur, err := os.ReadFile(o.host(st.Main))
		if err != nil {
			return nil, err
		}
		switch {
		case sum(cur) == st.MainWritten:
			restore = true
		case string(cur) == string(orig):
		default:
			return nil, fmt.Errorf("%s changed since install: left as it is (remove %s from its imports by hand, then run uninstall again)", st.Main, st.DropIn)
		}
	}
	var undivert bool
	if st.Diverted != "" {
		ours, _, err := o.diversion(ctx, st.Diverted)
		if err != nil {
			return nil, err
		}
		if ours {
			if cur, err := os.ReadFile(o.host(st.Diverted)); err == nil && sum(cur) != st.ShimWritten {
				return nil, fmt.Errorf("%s changed since install: left as it is, diverted (move it away, then run uninstall again)", st.Diverted)
			}
			undivert = true
		}
	}
	if o.DryRun {
		if undivert {
			fmt.Fprintf(o.Stdout, "would remove our %s and run dpkg-divert --local --rename --divert %s --remove %s (upstream's binary back)\n", st.Diverted, diverted(st.Diverted), st.Diverted)
		}
		fmt.Fprintf(o.Stdout, "would remove %s\n", st.DropIn)
		if restore {
			fmt.Fprintf(o.Stdout, "would put back %s as it was before install\n", st.Main)
		}
		return res, nil
	}
	if undivert {
		if err := o.removeDiversion(ctx, st.Diverted); err != nil {
			return res, fmt.Errorf("removing the diversion of %s: %w", st.Diverted, err)
		}
		res.Files = append(res.Files, st.Diverted)
	}
	if restore {
		if err := writeFileAtomic(o.host(st.Main), orig, fs.FileMode(st.MainMode)); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, st.Main)
	}
	if err := os.Remove(o.host(st.DropIn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	res.Files = append(res.Files, st.DropIn)
	if st.CreatedDir != "" {
		_ = os.Remove(o.host(st.CreatedDir)) // only when empty
	}
	if err := os.RemoveAll(o.host(o.StateDir)); err != nil {
		return res, err
	}
	res.Changed = true
	fmt.Fprintf(o.Stdout, "removed: %v\n", res.Files)
	if o.NoRestart {
		return res, nil
	}
	if err := o.restart(ctx); err != nil {
		return res, err
	}
	res.Restarted = true
	return res, o.answers(ctx)
}

package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/shimrobust/containerd-shim-runc-v2-robust/delegate"
)

// DefaultUpstreamShim is upstream's binary as Debian's containerd package
// installs it (`dpkg -S containerd-shim-runc-v2`).
var DefaultUpstreamShim = filepath.Join("/usr/bin", delegate.BinaryName)

// diverted returns where dpkg-divert moves upstream's binary p (host's
// names): delegate.DivertedName beside it.
func diverted(p string) string { return filepath.Join(filepath.Dir(p), delegate.DivertedName) }

// divertPlan is --replace-shim-binary's part of an install.
type divertPlan struct {
	Path  string // upstream's binary, host's name; diverted(Path) once diverted
	Data  []byte // our binary's bytes (ShimPath's), written at Path
	Add   bool   // the diversion is added by this install
	Write bool   // Path is (re)written with Data
	Old   []byte // when the diversion was ours already: the bytes at Path before (nil: none)
	added bool   // applyDivert added the diversion
}

// canReplace refuses --replace-shim-binary where it cannot or must not be
// done: with --mode runtime-class (a RuntimeClass is an opt-in per pod;
// the diverted binary serves every runc v2 task, so the two contradict
// each other), without dpkg-divert in the host's root (not a
// Debian-family host), without dpkg-divert on this process's PATH (it
// runs as `dpkg-divert --root HOST-ROOT` under --host-root), or with an
// upstream path that delegate.Find would not look beside.
func (o *Options) canReplace() error {
	switch {
	case o.Mode != ModeDefault:
		return fmt.Errorf("%w: refused with --mode %s: it serves every runc v2 task, which --mode default does for CRI; a RuntimeClass is an opt-in per pod", ErrReplaceShimBinary, o.Mode)
	case !filepath.IsAbs(o.UpstreamShim) || filepath.Base(o.UpstreamShim) != delegate.BinaryName:
		return fmt.Errorf("%w: refused: upstream's binary %q: an absolute path ending in %s", ErrReplaceShimBinary, o.UpstreamShim, delegate.BinaryName)
	case filepath.Clean(o.UpstreamShim) == filepath.Clean(o.ShimPath):
		return fmt.Errorf("%w: refused: --shim-path %s is upstream's binary", ErrReplaceShimBinary, o.ShimPath)
	}
	if _, err := os.Stat(o.host("/usr/bin/dpkg-divert")); err != nil {
		return fmt.Errorf("%w: refused: no dpkg-divert on this host (Debian-family hosts only)", ErrReplaceShimBinary)
	}
	if _, err := exec.LookPath(o.DpkgDivert); err != nil {
		return fmt.Errorf("%w: refused: %v (the installer needs dpkg)", ErrReplaceShimBinary, err)
	}
	return nil
}

// dpkgDivert runs dpkg-divert on the host's database: `--root HOST-ROOT`
// (admindir HOST-ROOT/var/lib/dpkg) under --host-root.
func (o *Options) dpkgDivert(ctx context.Context, args ...string) ([]byte, error) {
	argv := []string{o.DpkgDivert}
	if o.HostRoot != "/" {
		argv = append(argv, "--root", o.HostRoot)
	}
	return o.run(ctx, append(argv, args...)...)
}

// diversion says how p is diverted: ours (a local diversion to
// diverted(p)), else other is dpkg-divert's line for it ("" when none).
func (o *Options) diversion(ctx context.Context, p string) (ours bool, other string, err error) {
	out, err := o.dpkgDivert(ctx, "--list", p)
	if err != nil {
		return false, "", err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case l == "":
		case l == "local diversion of "+p+" to "+diverted(p):
			ours = true
		default:
			other = l
		}
	}
	return ours, other, nil
}

// planDivert computes --replace-shim-binary's part; st is install's state
// (nil: none). A refusal wraps ErrReplaceShimBinary; nothing was changed.
func (o *Options) planDivert(ctx context.Context, st *state) (*divertPlan, error) {
	p := filepath.Clean(o.UpstreamShim)
	if st != nil && st.Diverted != "" && st.Diverted != p {
		return nil, fmt.Errorf("%w: refused: %s is diverted by an earlier install: uninstall first", ErrReplaceShimBinary, st.Diverted)
	}
	data, err := os.ReadFile(o.host(o.ShimPath))
	if err != nil {
		return nil, fmt.Errorf("%w: refused: our binary (--shim-path): %v", ErrReplaceShimBinary, err)
	}
	d := &divertPlan{Path: p, Data: data}
	ours, other, err := o.diversion(ctx, p)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrReplaceShimBinary, err)
	case other != "":
		return nil, fmt.Errorf("%w: refused: %s is diverted already, not by install: %s", ErrReplaceShimBinary, p, other)
	case ours && (st == nil || st.Diverted != p):
		return nil, fmt.Errorf("%w: refused: %s is diverted to %s, but not by install (no record in %s)", ErrReplaceShimBinary, p, diverted(p), o.StateDir)
	case ours:
		cur, err := os.ReadFile(o.host(p))
		switch {
		case err == nil && bytes.Equal(cur, data):
		case err == nil:
			d.Write, d.Old = true, cur
		case errors.Is(err, fs.ErrNotExist):
			d.Write = true
		default:
			return nil, err
		}
		return d, nil
	}
	if fi, err := os.Lstat(o.host(p)); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: refused: upstream's binary %s is not a regular file (%v)", ErrReplaceShimBinary, p, err)
	}
	if _, err := os.Lstat(o.host(diverted(p))); err == nil {
		return nil, fmt.Errorf("%w: refused: %s exists already", ErrReplaceShimBinary, diverted(p))
	}
	d.Add, d.Write = true, true
	return d, nil
}

// applyDivert writes our binary to a temporary file beside Path, diverts
// upstream's (renamed to diverted(Path)), then renames ours into place:
// Path is missing only between two renames. A failure before the
// diversion leaves nothing; after it, undoDivert puts everything back.
func (o *Options) applyDivert(ctx context.Context, d *divertPlan) error {
	if !d.Write {
		return nil
	}
	dst := o.host(d.Path)
	tmp := dst + ".robust-tmp"
	if err := os.WriteFile(tmp, d.Data, 0o755); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.Remove(tmp)
		return err
	}
	if d.Add {
		if _, err := o.dpkgDivert(ctx, "--local", "--rename", "--divert", diverted(d.Path), "--add", d.Path); err != nil {
			os.Remove(tmp)
			return err
		}
		d.added = true
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("putting our binary at %s: %w", d.Path, err)
	}
	return nil
}

// undoDivert puts back what applyDivert did: the diversion removed and
// upstream's binary renamed back when this install added it; else our
// earlier bytes at Path.
func (o *Options) undoDivert(ctx context.Context, d *divertPlan) error {
	switch {
	case !d.Write:
		return nil
	case d.Add && !d.added:
		return nil // applyDivert failed before the diversion and cleaned up
	case d.Add:
		return o.removeDiversion(ctx, d.Path)
	case d.Old != nil:
		return writeFileAtomic(o.host(d.Path), d.Old, 0o755)
	}
	if err := os.Remove(o.host(d.Path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// removeDiversion moves our binary at p aside, runs `dpkg-divert --local
// --rename --remove p` (upstream's renamed back: same bytes, same mode),
// then deletes ours; when dpkg-divert fails, ours is put back in place.
// No diversion of p, or not ours: it touches nothing.
func (o *Options) removeDiversion(ctx context.Context, p string) error {
	ours, _, err := o.diversion(ctx, p)
	if err != nil || !ours {
		return err
	}
	dst := o.host(p)
	aside := dst + ".robust-old"
	err = os.Rename(dst, aside)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("moving our %s aside: %w", p, err)
	}
	movedAside := err == nil
	if _, err := o.dpkgDivert(ctx, "--local", "--rename", "--divert", diverted(p), "--remove", p); err != nil {
		if movedAside {
			if rerr := os.Rename(aside, dst); rerr != nil {
				err = errors.Join(err, fmt.Errorf("putting ours back at %s: %w", p, rerr))
			}
		}
		return err
	}
	if movedAside {
		if err := os.Remove(aside); err != nil {
			return err
		}
	}
	return nil
}

// checkDivert runs our binary at p as this process reaches it (the
// host's file: it finds its delegate beside itself, so no chroot and no
// /proc in the host's root are needed), with no
// $CONTAINERD_SHIM_ROBUST_DELEGATE, and wants `-v` to name diverted(p) as
// its delegate and that delegate's own -v to answer.
func (o *Options) checkDivert(ctx context.Context, p string) error {
	want := "delegate: " + o.host(diverted(p)) + "\n"
	out, err := o.runEnv(ctx, []string{delegate.EnvDelegate + "="}, o.host(p), "-v")
	if err != nil {
		return fmt.Errorf("%w: %s", err, oneLine(out))
	}
	if !strings.Contains(string(out), want) {
		return fmt.Errorf("%s -v does not name %s as its delegate: %s", p, diverted(p), oneLine(out))
	}
	return nil
}

// oneLine is a command's last lines of output on one line.
func oneLine(out []byte) string {
	return strings.Join(strings.Fields(lastLines(string(out), 3)), " ")
}

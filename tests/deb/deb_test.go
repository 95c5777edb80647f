package deb

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	name  = "containerd-shim-runc-v2-robust"
	units = "containerd-shim-robust-gc"
)

// holderScript makes the isolated root in the namespace unshare gave it and
// then waits; $1 is an empty directory of the host, a tmpfs in here only.
const holderScript = `set -eu
B=$1
mount -t tmpfs -o mode=0755 deb-e2e "$B"
mkdir "$B/upper" "$B/work" "$B/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/upper,workdir=$B/work" "$B/merged"
mount -t proc proc "$B/merged/proc"
mount --rbind /dev "$B/merged/dev"
mount -t tmpfs -o mode=0755 run "$B/merged/run"
mount -t tmpfs -o mode=1777 tmp "$B/merged/tmp"
echo ready
exec sleep infinity
`

// root is one isolated Debian 12 root: the host's root filesystem under an
// overlay whose upper dir is a tmpfs of a private mount namespace.
type root struct {
	t      *testing.T
	holder *exec.Cmd
	base   string // inside the namespace
}

func newRoot(t *testing.T) *root {
	t.Helper()
	base := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", holderScript, "sh", base)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	r := &root{t: t, holder: cmd, base: base}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("isolated root (unshare -m, overlayfs over /, tmpfs upper): %s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("isolated root not ready after 30s: %s", stderr.String())
	}
	if _, err := os.Stat(r.path("/var/lib/dpkg/status")); err != nil {
		t.Fatalf("isolated root has no dpkg status: %v", err)
	}
	return r
}

// ns is where the namespace's mounts are seen from the host.
func (r *root) ns() string { return fmt.Sprintf("/proc/%d/root%s", r.holder.Process.Pid, r.base) }

// path is p of the isolated root, seen from the host.
func (r *root) path(p string) string { return r.ns() + "/merged" + p }

func (r *root) upper() string { return r.ns() + "/upper" }

// run runs argv chrooted in the isolated root, with no systemd and a
// minimal environment.
func (r *root) run(argv ...string) (string, error) {
	args := append([]string{"-t", fmt.Sprint(r.holder.Process.Pid), "-m", "--", "chroot", r.base + "/merged"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// treeHash is a digest of every name, mode, link target and content under dir.
func treeHash(dir string) string {
	h := sha256.New()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(h, "%s error %v\n", p[len(dir):], err)
			return nil
		}
		fi, _ := d.Info()
		fmt.Fprintf(h, "%s %v\n", p[len(dir):], fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintln(h, l)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// bookkeeping is what dpkg itself may leave changed in the root.
func bookkeeping(rel string) bool {
	if strings.HasPrefix(rel, "var/lib/dpkg/info/"+name+".") {
		return false
	}
	for _, p := range []string{"var/lib/dpkg/", "var/log/dpkg.log", "var/log/apt/", "var/log/alternatives.log"} {
		if rel == strings.TrimSuffix(p, "/") || strings.HasPrefix(rel, p) {
			return true
		}
	}
	return false
}

// changes lists what the overlay's upper dir holds beyond dpkg's
// bookkeeping (with the package's own files in /var/lib/dpkg/info when
// installed), the files in owned (rel paths) and directories the host
// has: every file written, every host file removed (a whiteout), every
// new directory.
func (r *root) changes(owned map[string]bool, installed bool) []string {
	var got []string
	up := r.upper()
	_ = filepath.WalkDir(up, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == up {
			return err
		}
		rel := p[len(up)+1:]
		if bookkeeping(rel) || owned[rel] ||
			installed && strings.HasPrefix(rel, "var/lib/dpkg/info/"+name+".") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if host, err := os.Lstat("/" + rel); err == nil && host.IsDir() {
				return nil
			}
			got = append(got, "new directory /"+rel)
			return nil
		}
		if fi.Mode()&fs.ModeCharDevice != 0 {
			got = append(got, "removed /"+rel)
			return nil
		}
		got = append(got, "wrote /"+rel)
		return nil
	})
	sort.Strings(got)
	return got
}

// ownedRel is `dpkg -L` as upper-dir paths (with /lib resolved into
// /usr/lib as on Debian 12's merged /usr).
func ownedRel(list []string) map[string]bool {
	m := map[string]bool{}
	for _, p := range list {
		rel := strings.TrimPrefix(p, "/")
		if strings.HasPrefix(rel, "lib/") {
			rel = "usr/" + rel
		}
		m[rel] = true
	}
	return m
}

// enabled lists every trace of our units being enabled: a symlink to them
// in a *.wants or *.requires dir, or deb-systemd-helper's state.
func (r *root) enabled() []string {
	var got []string
	for _, dir := range []string{"/etc/systemd", "/usr/lib/systemd", "/var/lib/systemd"} {
		base := r.path(dir)
		_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if strings.Contains(d.Name(), units) && (strings.Contains(filepath.Dir(p), ".wants") ||
				strings.Contains(filepath.Dir(p), ".requires") || strings.Contains(p, "deb-systemd-helper")) {
				got = append(got, dir+p[len(base):])
			}
			return nil
		})
	}
	return got
}

func staticELF(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("machine %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("has a program interpreter")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("needs %v", libs)
	}
	return nil
}

// installed checks the package as installed; after is the install's name.
func (r *root) installed(step, etcContainerd string) []string {
	var bad []string
	add := func(f string, a ...any) { bad = append(bad, step+": "+fmt.Sprintf(f, a...)) }
	if out, err := r.run("dpkg-query", "-W", "-f=${Status}", name); err != nil || out != "install ok installed" {
		add("dpkg status %q (%v)", out, err)
	}
	bin := "/usr/bin/" + name
	if fi, err := os.Stat(r.path(bin)); err != nil || fi.Mode().Perm() != 0o755 {
		add("%s: %v %v", bin, fi, err)
	} else if err := staticELF(r.path(bin)); err != nil {
		add("%s not a static amd64 binary: %v", bin, err)
	}
	if out, err := r.run(bin, "-h"); !strings.Contains(out, "Usage") && !strings.Contains(out, "usage") {
		add("%s -h: %v: %s", bin, err, out)
	}
	for _, u := range []string{units + ".service", units + ".timer"} {
		b, err := os.ReadFile(r.path("/lib/systemd/system/" + u))
		if err != nil {
			add("unit %s: %v", u, err)
			continue
		}
		if strings.HasSuffix(u, ".service") && !strings.Contains(string(b), "ExecStart=/usr/bin/"+name) {
			add("%s does not run /usr/bin/%s", u, name)
		}
	}
	if e := r.enabled(); len(e) > 0 {
		add("gc units enabled: %v", e)
	}
	for _, f := range []string{"README.md", "copyright"} {
		if _, err := os.Stat(r.path("/usr/share/doc/" + name + "/" + f)); err != nil {
			add("docs: %v", err)
		}
	}
	if h := treeHash(r.path("/etc/containerd")); h != etcContainerd {
		add("/etc/containerd changed")
	}
	return bad
}

// checkDeb installs debs one after the other (the first a fresh install,
// the others over it: a reinstall, an upgrade) and purges the package in a
// fresh isolated root, and returns every way it fell short.
// beforePurge, if not nil, runs in the root before the purge.
func checkDeb(t *testing.T, beforePurge func(r *root), debs ...string) []string {
	t.Helper()
	r := newRoot(t)
	var bad []string
	if _, err := os.Stat(r.path("/run/systemd/system")); err == nil {
		t.Fatal("isolated root has /run/systemd/system")
	}
	etc := treeHash(r.path("/etc/containerd"))

	for i, deb := range debs {
		b, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		in := fmt.Sprintf("/tmp/%d-%s", i, filepath.Base(deb))
		if err := os.WriteFile(r.path(in), b, 0o644); err != nil {
			t.Fatal(err)
		}
		step := fmt.Sprintf("install %d", i+1)
		out, err := r.run("dpkg", "-i", in)
		t.Logf("dpkg -i (%s):\n%s", step, out)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: dpkg -i: %v: %s", step, err, out))
			return bad
		}
		bad = append(bad, r.installed(step, etc)...)
		if i == 0 {
			if out, _ := r.run("dpkg", "-L", name); out != "" {
				for _, c := range r.changes(ownedRel(strings.Fields(out)), true) {
					bad = append(bad, "install: "+c)
				}
			}
		}
	}

	if beforePurge != nil {
		beforePurge(r)
	}
	out, err := r.run("dpkg", "-L", name)
	if err != nil {
		bad = append(bad, fmt.Sprintf("dpkg -L: %v: %s", err, out))
	}
	list := strings.Fields(out)
	out, err = r.run("dpkg", "--purge", name)
	t.Logf("dpkg --purge:\n%s", out)
	if err != nil {
		bad = append(bad, fmt.Sprintf("purge: dpkg --purge: %v: %s", err, out))
		return bad
	}
	for _, p := range list {
		fi, err := os.Stat(r.path(p))
		if err != nil {
			continue
		}
		if host, herr := os.Stat(p); herr == nil && fi.IsDir() && host.IsDir() {
			continue // a directory the host has (/usr/bin, /lib -> usr/lib, ...)
		}
		bad = append(bad, "purge: left "+p)
	}
	if m, _ := filepath.Glob(r.path("/var/lib/dpkg/info/" + name + ".*")); len(m) > 0 {
		bad = append(bad, fmt.Sprintf("purge: left %v in /var/lib/dpkg/info", m))
	}
	if out, err := r.run("dpkg-query", "-W", "-f=${Status}", name); err == nil && out != "" {
		bad = append(bad, fmt.Sprintf("purge: dpkg still knows it: %q", out))
	}
	if treeHash(r.path("/etc/containerd")) != etc {
		bad = append(bad, "purge: /etc/containerd changed")
	}
	for _, c := range r.changes(nil, false) {
		bad = append(bad, "purge: "+c)
	}
	return bad
}

// findDeb is DEB_E2E_DEB, else the newest amd64 .deb of DEB_E2E_DIR.
func findDeb(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("DEB_E2E_DEB"); d != "" {
		return d
	}
	dir := os.Getenv("DEB_E2E_DIR")
	if dir == "" {
		t.Fatal("DEB_E2E_DIR (or DEB_E2E_DEB) not set: run `make deb-e2e`, which builds the .deb first")
	}
	m, _ := filepath.Glob(filepath.Join(dir, name+"_*_amd64.deb"))
	if len(m) != 1 {
		t.Fatalf("want one %s_*_amd64.deb in %s, have %v: run `make deb-e2e`", name, dir, m)
	}
	return m[0]
}

func prerequisites(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (mount namespace, overlayfs, chroot)")
	}
	for _, c := range []string{"unshare", "nsenter", "dpkg", "dpkg-deb"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not found: %v", c, err)
		}
	}
	if b, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(b), "\toverlay\n") {
		t.Fatal("overlayfs not available (modprobe overlay)")
	}
	if b, _ := os.ReadFile("/etc/debian_version"); !strings.HasPrefix(string(b), "12.") {
		t.Fatalf("the host root is not Debian 12 (debian_version %q): the isolated root is made from it", b)
	}
}

// TestDeb: the release's amd64 .deb installs, reinstalls, upgrades (to
// itself with a higher version) and purges cleanly, and the host's root
// is untouched.
func TestDeb(t *testing.T) {
	prerequisites(t)
	deb := findDeb(t)
	hostStatus := treeHash("/var/lib/dpkg/info") + treeHash("/var/lib/dpkg/status")
	if _, err := os.Lstat("/usr/bin/" + name); err == nil {
		t.Logf("note: the host has /usr/bin/%s (not from this test)", name)
	}
	upgrade := repack(t, deb, func(tree string) {
		control := filepath.Join(tree, "DEBIAN", "control")
		b, err := os.ReadFile(control)
		if err != nil {
			t.Fatal(err)
		}
		b = regexp.MustCompile(`(?m)^Version: (.*)$`).ReplaceAll(b, []byte("Version: ${1}+upgrade1"))
		if err := os.WriteFile(control, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}, "upgrade")
	if bad := checkDeb(t, nil, deb, deb, upgrade); len(bad) > 0 {
		t.Fatalf("%s:\n  %s", filepath.Base(deb), strings.Join(bad, "\n  "))
	}
	if treeHash("/var/lib/dpkg/info")+treeHash("/var/lib/dpkg/status") != hostStatus {
		t.Fatal("the host's dpkg database changed")
	}
}

// TestDebPurgeAfterEnable: an operator who enabled the gc timer (as the
// README says) and then purges the package without systemd running (a
// chroot, an image build) is left no symlink to a unit that is gone.
func TestDebPurgeAfterEnable(t *testing.T) {
	prerequisites(t)
	deb := findDeb(t)
	bad := checkDeb(t, func(r *root) {
		out, err := r.run("systemctl", "enable", units+".timer")
		t.Logf("systemctl enable (offline):\n%s", out)
		if err != nil || len(r.enabled()) == 0 {
			t.Fatalf("systemctl enable %s.timer in the root: %v: %s", units, err, out)
		}
	}, deb)
	// The enablement is the operator's act, not the package's.
	var purge []string
	for _, b := range bad {
		if strings.HasPrefix(b, "purge") {
			purge = append(purge, b)
		}
	}
	if len(purge) > 0 {
		t.Fatalf("%s:\n  %s", filepath.Base(deb), strings.Join(purge, "\n  "))
	}
}

// TestDebCatchesMutants: packages that are wrong in the ways a .deb goes
// wrong are reported, so TestDeb's silence means something.
func TestDebCatchesMutants(t *testing.T) {
	prerequisites(t)
	deb := findDeb(t)
	for _, tc := range []struct {
		name, script, body, want string
	}{
		{"postinst enables the timer", "postinst",
			"mkdir -p /etc/systemd/system/timers.target.wants\nln -sf /lib/systemd/system/" + units +
				".timer /etc/systemd/system/timers.target.wants/" + units + ".timer\n",
			"gc units enabled"},
		{"postinst leaves a file after purge", "postinst",
			"mkdir -p /var/lib/" + name + "\necho x >/var/lib/" + name + "/state\n",
			"purge: wrote /var/lib/" + name + "/state"},
		{"prerm needs systemd", "prerm",
			"systemctl disable --now " + units + ".timer\n",
			"pre-removal script subprocess returned error"},
		{"postinst edits /etc/containerd", "postinst",
			"mkdir -p /etc/containerd\necho '# ours' >>/etc/containerd/config.toml\n",
			"/etc/containerd changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mutant := mutate(t, deb, tc.script, tc.body)
			bad := checkDeb(t, nil, mutant, mutant)
			t.Logf("reported:\n  %s", strings.Join(bad, "\n  "))
			if !strings.Contains(strings.Join(bad, "\n"), tc.want) {
				t.Fatalf("mutant %q not caught: want a report with %q", tc.name, tc.want)
			}
		})
	}
}

// mutate rebuilds deb with script (postinst, prerm, ...) replaced by a
// `set -e` shell script of body.
func mutate(t *testing.T, deb, script, body string) string {
	t.Helper()
	return repack(t, deb, func(tree string) {
		if err := os.WriteFile(filepath.Join(tree, "DEBIAN", script), []byte("#!/bin/sh\nset -e\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}, script)
}

// repack unpacks deb with dpkg-deb -R, lets edit change the tree and
// builds it again as <tag>-<name of deb>.
func repack(t *testing.T, deb string, edit func(tree string), tag string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if out, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R: %v: %s", err, out)
	}
	edit(tree)
	out := filepath.Join(dir, tag+"-"+filepath.Base(deb))
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "-b", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v: %s", err, b)
	}
	return out
}

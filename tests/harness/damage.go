package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Names of the files in a runc-v2 task directory that the damage functions
// break.
const (
	RuntimeFile = "runtime"
	InitPidFile = "init.pid"
	OptionsFile = "options.json"
	ConfigFile  = "config.json"
)

// BundleFiles are the four files the delete path reads.
var BundleFiles = []string{RuntimeFile, InitPidFile, OptionsFile, ConfigFile}

// Garbage is what CorruptFile writes: not text, not JSON, not a number, not
// a path.
var Garbage = []byte("\x00\xff\xfe\x89PNG\r\n\x1a\n{\"unterminated\x00\x9c\xde\xad\xbe\xef")

// MissingRuntime is a runtime binary path that does not exist.
const MissingRuntime = "/nonexistent/e2e/runc"

// RemoveFile removes one file of the task directory.
func (c *Container) RemoveFile(name string) error {
	return os.Remove(filepath.Join(c.Bundle, name))
}

// CorruptFile replaces one file of the task directory with Garbage.
func (c *Container) CorruptFile(name string) error {
	return os.WriteFile(filepath.Join(c.Bundle, name), Garbage, 0o600)
}

// PointInitPidAt writes pid into init.pid: a claim that names a process
// that is not the container's (as after pid reuse).
func (c *Container) PointInitPidAt(pid int) error {
	return os.WriteFile(filepath.Join(c.Bundle, InitPidFile), []byte(strconv.Itoa(pid)), 0o644)
}

// RemoveRuncState removes runc's state directory for the container.
func (c *Container) RemoveRuncState() error {
	return os.RemoveAll(c.RuncState)
}

// PointAtMissingRuntime names MissingRuntime as the runtime binary: in the
// `runtime` file and in options.json's binary_name.
func (c *Container) PointAtMissingRuntime() error {
	if err := os.WriteFile(filepath.Join(c.Bundle, RuntimeFile), []byte(MissingRuntime), 0o600); err != nil {
		return err
	}
	p := filepath.Join(c.Bundle, OptionsFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	opts := map[string]any{}
	if err := json.Unmarshal(data, &opts); err != nil {
		return fmt.Errorf("options.json: %w", err)
	}
	opts["binary_name"] = MissingRuntime
	data, err = json.Marshal(opts)
	if err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o600)
}

// BindHostDir makes a host directory holding files (the source, in the
// container's temp dir) and bind-mounts it at rel below the bundle (e.g.
// "rootfs/mnt/host"), in the daemon's mount namespace. The source's files
// are recorded; Residue reports any that is missing or changed.
func (c *Container) BindHostDir(rel string) (source string, err error) {
	source = filepath.Join(c.Dir, "host-"+strings.ReplaceAll(rel, "/", "_"))
	files := map[string]string{
		"data.txt":          "precious data\n",
		"sub/nested.txt":    "more precious data\n",
		"sub/deeper/db.bin": string(Garbage),
	}
	for name, content := range files {
		p := filepath.Join(source, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	snap, err := takeSnapshot(source)
	if err != nil {
		return "", err
	}
	target := filepath.Join(c.Bundle, rel)
	if err := c.d.inMountNS("mkdir", "-p", target); err != nil {
		return "", err
	}
	if err := c.d.inMountNS("mount", "--bind", source, target); err != nil {
		return "", err
	}
	c.binds[source] = snap
	return source, nil
}

// inMountNS runs a command in the daemon's mount namespace (nsenter when it
// has a private one, directly otherwise).
func (d *Daemon) inMountNS(args ...string) error {
	if pid := d.Pid(); d.cfg.CgroupV2View && pid > 0 {
		args = append([]string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--"}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// mountNSPids are the pids whose mount namespaces the residue checks look
// at: this process's, and the daemon's when it has a private one.
func (d *Daemon) mountNSPids() []int {
	pids := []int{0}
	if pid := d.Pid(); d.cfg.CgroupV2View && pid > 0 {
		pids = append(pids, pid)
	}
	return pids
}

// snapshot maps each file below a directory to a digest of its content
// (regular files) or its target (symlinks).
type snapshot map[string]string

func takeSnapshot(dir string) (snapshot, error) {
	s := snapshot{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s[rel] = "link:" + t
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			s[rel] = hex.EncodeToString(sum[:])
		}
		return nil
	})
	return s, err
}

// diff returns the recorded files that are missing or changed in dir.
func (s snapshot) diff(dir string) []string {
	now, err := takeSnapshot(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return []string{fmt.Sprintf("%s: %v", dir, err)}
	}
	var out []string
	for rel, sum := range s {
		switch got, ok := now[rel]; {
		case !ok:
			out = append(out, filepath.Join(dir, rel)+" missing")
		case got != sum:
			out = append(out, filepath.Join(dir, rel)+" changed")
		}
	}
	sort.Strings(out)
	return out
}

package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Files of the poststop hook in the container's temp dir.
const (
	hookScript = "poststop-hook.sh"
	hookRuns   = "poststop-hook.runs"
)

// hookTimeout (seconds) bounds one run of the poststop hook; runc kills it
// then. Well inside the 5 s containerd gives the shim's delete.
const hookTimeout = 2

// poststopHook writes the poststop hook into dir and returns it as the
// spec names it, and the path of the file it appends its runs to.
//
// The hook is a /bin/sh script on the host (runc runs poststop hooks in
// its own namespaces). It reads the OCI state JSON runc hands it on stdin,
// takes its "bundle", and appends one line per run:
//
//	config=yes|no rootfs=yes|no mounted=yes|no
//
// whether <bundle>/config.json was a file, <bundle>/rootfs a directory,
// and the rootfs still mounted (its bin/busybox there) at that moment. It
// uses shell builtins only.
func poststopHook(dir string) (specs.Hook, string, error) {
	script := filepath.Join(dir, hookScript)
	runs := filepath.Join(dir, hookRuns)
	if strings.ContainsAny(runs, "'\n") {
		return specs.Hook{}, "", fmt.Errorf("poststop hook: unusable path %q", runs)
	}
	// runc marshals the state with encoding/json: "bundle":"<path>", no
	// spaces, no newline.
	text := `#!/bin/sh
# OCI poststop hook of the e2e suite (tests/harness/hook.go).
IFS= read -r state || true
config=no rootfs=no mounted=no
case $state in
*'"bundle":"'*)
	b=${state#*'"bundle":"'}
	b=${b%%'"'*}
	[ -f "$b/config.json" ] && config=yes
	[ -d "$b/rootfs" ] && rootfs=yes
	[ -f "$b/rootfs/bin/busybox" ] && mounted=yes
	;;
esac
echo "config=$config rootfs=$rootfs mounted=$mounted" >>'` + runs + `'
`
	if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
		return specs.Hook{}, "", fmt.Errorf("poststop hook: %w", err)
	}
	timeout := hookTimeout
	return specs.Hook{
		Path:    script,
		Args:    []string{script},
		Env:     []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Timeout: &timeout,
	}, runs, nil
}

// withPoststopHook appends hook to the spec's poststop hooks.
func withPoststopHook(hook specs.Hook) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Hooks == nil {
			s.Hooks = &specs.Hooks{}
		}
		s.Hooks.Poststop = append(s.Hooks.Poststop, hook)
		return nil
	}
}

// PoststopHookRuns returns the lines the poststop hook wrote, one per run
// (see ContainerConfig.PoststopHook); none when it never ran. It fails when
// the container has no hook.
func (c *Container) PoststopHookRuns() ([]string, error) {
	if c.HookRuns == "" {
		return nil, errors.New("the container has no poststop hook")
	}
	data, err := os.ReadFile(c.HookRuns)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), nil
}

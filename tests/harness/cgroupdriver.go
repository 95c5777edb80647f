package harness

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
)

// CgroupDriverEnv selects runc's cgroup driver for every container the
// harness runs: "cgroupfs" (the default, cgroupsPath /<namespace>/<id>) or
// "systemd" (runtime options SystemdCgroup, as kubelet's SystemdCgroup =
// true sets them; cgroupsPath system.slice:<namespace>:<id>, so that runc
// asks systemd for the scope unit <namespace>-<id>.scope in system.slice).
// The systemd driver needs systemd as PID 1 (tests/node runs the suites
// inside such a node); any other value fails the container's start.
const CgroupDriverEnv = "E2E_CGROUP_DRIVER"

// CgroupDriver is the driver CgroupDriverEnv selects.
func CgroupDriver() string {
	if d := os.Getenv(CgroupDriverEnv); d != "" {
		return d
	}
	return "cgroupfs"
}

// SystemdScope is the scope unit runc's systemd driver makes for a
// container the harness runs with the systemd driver.
func SystemdScope(namespace, id string) string {
	return namespace + "-" + id + ".scope"
}

// runtimeOptions are the runc shim's options for CgroupDriver: none for
// cgroupfs (the shim's defaults), SystemdCgroup for systemd.
func runtimeOptions() (any, error) {
	switch d := CgroupDriver(); d {
	case "cgroupfs":
		return nil, nil
	case "systemd":
		return &options.Options{SystemdCgroup: true}, nil
	default:
		return nil, fmt.Errorf("%s=%q: want cgroupfs or systemd", CgroupDriverEnv, d)
	}
}

// withCgroupDriver sets the spec's cgroupsPath in the form the driver
// wants; the cgroupfs driver keeps containerd's default.
func withCgroupDriver(namespace, id string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if CgroupDriver() == "systemd" && s.Linux != nil {
			s.Linux.CgroupsPath = "system.slice:" + namespace + ":" + id
		}
		return nil
	}
}

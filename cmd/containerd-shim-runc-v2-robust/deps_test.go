package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoFrameworkInTheBinary holds the product binary to what it must not
// link: containerd's shim framework and runc task service (they belong to
// the delegate, upstream's own binary), and the heavy packages a short-lived
// delete must not start up with (gRPC's client and transport, containerd's
// cgroups, libcontainer). The one call the delete makes to a shim (is it
// alive?) goes through containerd's own ttrpc client with the task API's v2
// types (package liveness, issue 16): those, and the parts of gRPC that
// ttrpc needs for its status codes, are allowed; task API v3's package,
// which links gRPC's client, is not.
func TestNoFrameworkInTheBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/containerd/containerd/", // any package of containerd's main module, 1.x or v2
		"github.com/containerd/containerd/api/runtime/task/v3",
		"google.golang.org/grpc/internal/transport",
		"github.com/containerd/cgroups",
		"github.com/opencontainers/runc/libcontainer",
	}
	allowed := []string{
		"github.com/containerd/containerd/api/types",
		"github.com/containerd/containerd/api/runtime/task/v2",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed %d packages: %q", len(deps), out)
	}
	isAllowed := func(d string) bool {
		for _, a := range allowed {
			if d == a || strings.HasPrefix(d, a+"/") {
				return true
			}
		}
		return false
	}
	for _, d := range deps {
		if d == "google.golang.org/grpc" {
			t.Errorf("the binary links gRPC's client %s", d)
		}
		for _, f := range forbidden {
			if (strings.HasPrefix(d+"/", f) || strings.HasPrefix(d, f)) && !isAllowed(d) {
				t.Errorf("the binary links %s", d)
			}
		}
	}
}

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoFrameworkInTheBinary holds the product binary to what it must not
// link: containerd's shim framework and runc task service (they belong to
// the delegate, upstream's own binary), and the heavy packages a short-lived
// delete must not start up with (gRPC, ttrpc, the protobuf registry).
func TestNoFrameworkInTheBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/containerd/containerd/", // any package of containerd's main module, 1.x or v2
		"github.com/containerd/ttrpc",
		"google.golang.org/grpc",
		"google.golang.org/protobuf/reflect/protoregistry",
		"github.com/containerd/cgroups",
		"github.com/opencontainers/runc/libcontainer",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d+"/", f) || strings.HasPrefix(d, f) {
				t.Errorf("the binary links %s", d)
			}
		}
	}
}

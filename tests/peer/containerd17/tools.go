//go:build tools

package containerd17

// containerd's integration image list (a non-test package of the test
// package's module), so that `go mod tidy` keeps the requirement.
import _ "github.com/containerd/containerd/integration/images"

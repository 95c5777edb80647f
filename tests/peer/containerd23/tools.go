//go:build tools

package containerd23

// containerd's integration image list (a non-test package of the test
// packages' module), so that `go mod tidy` keeps the requirement.
import _ "github.com/containerd/containerd/v2/integration/images"

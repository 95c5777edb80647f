// Package containerd24 is the tools module of the peer suite (make peer) on
// containerd 2.4: its go.mod pins the containerd version whose own
// integration tests tests/peer/build.sh compiles with `go test -c`
// (github.com/containerd/containerd/v2/integration and its client
// subpackage). It holds no code; tools.go keeps the requirement.
package containerd24

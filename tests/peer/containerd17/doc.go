// Package containerd17 is the tools module of the peer suite (make peer) on
// containerd 1.7: its go.mod pins the containerd version whose own CRI
// integration tests tests/peer/build.sh compiles with `go test -c`
// (github.com/containerd/containerd/integration). 1.7's client tests
// (integration/client) are a module of their own that is not published on
// the module proxy, so they cannot be built here. It holds no code;
// tools.go keeps the requirement.
package containerd17

//go:build tools

// The upstream runc shim of the same containerd version: the delegate and
// the baseline (built with "go build github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2").
package main

import _ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"

// Command containerd-shim-runc-v2-robust is containerd's runc v2 shim with a
// delete path that cleans up after a dead shim whatever is missing or
// corrupt. See package shim.
package main

import "github.com/shimrobust/containerd-shim-runc-v2-robust/shim"

func main() { shim.Main() }

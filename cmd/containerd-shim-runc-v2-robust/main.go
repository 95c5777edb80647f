package main

import "github.com/shimrobust/containerd-shim-runc-v2-robust/shim"

func main() { shim.Main() }

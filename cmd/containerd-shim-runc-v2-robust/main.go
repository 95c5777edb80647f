package main

import "github.com/shimrobust/containerd-shim-runc-v2-robust/cli"

func main() { cli.Main() }

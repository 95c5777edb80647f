module github.com/shimrobust/containerd-shim-runc-v2-robust/tests/peer

go 1.26.8

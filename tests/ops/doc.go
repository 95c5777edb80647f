// Package ops is the end-to-end suite of the operators' side of the robust
// shim: `delete` by hand from anywhere, the `gc` sweep, the reports and the
// metrics file, against a private containerd, real runc, real cgroups and
// mounts, with orphans left by UPSTREAM's shim (containerd-shim-runc-v2).
//
// Environment (the same names as tests/e2e):
//
//	E2E_CONTAINERD     containerd binary (default /usr/bin/containerd)
//	E2E_SHIM           our shim (default bin/containerd-shim-runc-v2-robust)
//	E2E_UPSTREAM_SHIM  upstream's shim of the same line, our delegate (default:
//	                   containerd-shim-runc-v2 next to E2E_CONTAINERD)
//	E2E_BUSYBOX        static busybox (default: busybox on PATH)
//
// The suite never skips: when it cannot run (not root, a binary missing, the
// daemon does not start) TestMain fails with a message saying why.
package ops

// Package e2e is the end-to-end fault suite of the robust shim: a private
// containerd, real runc, real cgroups and mounts, shims killed and bundles
// damaged the way they are in production. Every case runs with upstream's
// runc shim and with ours; only ours is asserted, and a side-by-side table of
// what each left behind is printed and written to tests/out.
//
// Environment:
//
//	E2E_CONTAINERD     containerd binary (default /usr/bin/containerd;
//	                   bin/containerd-X.Y/containerd for 1.7, 2.3, 2.4: `make daemons`)
//	E2E_SHIM           our shim (default bin/containerd-shim-runc-v2-robust)
//	E2E_UPSTREAM_SHIM  upstream's shim of the same line, our delegate (default:
//	                   containerd-shim-runc-v2 next to E2E_CONTAINERD)
//	E2E_BUSYBOX        static busybox (default: busybox on PATH)
//	E2E_OUT            directory of the side-by-side table (default tests/out)
//	RESULTS_DIR        when set, also write every cell as JSON lines into
//	                   RESULTS_DIR/e2e-<version>.jsonl (relative: from the
//	                   repository root) for `make results` (tools/results)
//	E2E_ONLY           "ours" or "upstream": run one shim only (development aid;
//	                   announced loudly, never the default)
//
// The suite never skips: when it cannot run (not root, a binary missing, the
// daemon does not start) TestMain fails with a message saying why.
package e2e

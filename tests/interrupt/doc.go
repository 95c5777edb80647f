// Package interrupt is the end-to-end suite of deletes cut short and of
// hung shims: a private containerd (real runc, cgroups and mounts) runs
// containers with our shim built with the failpoint tag; their shims are
// killed, or stopped (hung: the delete must kill them), or killed with an
// OCI poststop hook in the spec (the delete's steps then run one after
// another instead of side by side). The shim's `delete`, run as containerd
// runs it, is SIGKILLed at every step boundary (kill-at=STEP) of every such
// container and at random instants (a real SIGKILL 0–30 ms after it starts),
// then run again. After the second delete nothing of the container may be
// left (the harness's full residue list), the host data bind-mounted under
// the bundle must be intact (nothing deleted through a mount), and no
// process without proof may have been signalled (a process that claims the
// task's shim command line without its socket, and a plain bystander, stay
// alive). Two deletes and a gc of one task also race.
//
// Hung shims (issue 11's acceptance): a shim SIGSTOPped, then containerd
// restarted: containerd declares it dead and runs our delete; after it no
// shim, no container process, no task directory, no socket. At runtime
// containerd does not declare a stopped shim dead, so the operator's delete
// by hand is refused without -force and kills the stopped shim with it.
//
// Environment (as tests/e2e):
//
//	E2E_CONTAINERD     containerd binary (default /usr/bin/containerd; e.g.
//	                   bin/containerd-2.4/containerd)
//	E2E_UPSTREAM_SHIM  upstream's shim of the same line, our delegate (default:
//	                   containerd-shim-runc-v2 next to E2E_CONTAINERD)
//	E2E_BUSYBOX        static busybox (default: busybox on PATH)
//	INTERRUPT_RANDOM   number of random-instant SIGKILLs (default and least 40:
//	                   a smaller or non-numeric value fails the test)
//	RESULTS_DIR        when set, also write the figures as JSON lines into
//	                   RESULTS_DIR/interrupt-<version>.jsonl (relative: from
//	                   the repository root) for `make results` (tools/results)
//
// Our shim is built by TestMain with `go build -tags failpoint` into a temp
// directory (E2E_SHIM is not used: the product binary has no failpoints).
// The suite never skips: when it cannot run (not root, a binary missing, the
// build fails, the daemon does not start) TestMain fails with a message
// saying why. The figures are printed at the end ("interrupt figures: ...").
package interrupt

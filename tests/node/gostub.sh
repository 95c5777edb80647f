#!/bin/sh
# go, as the node knows it: the node has no Go toolchain. The suites build
# two binaries at their start (tests/e2e and tests/interrupt: our shim with
# -tags failpoint; internal/testutil: the fake shim); tests/node built both
# on the host with the same flags, and this stand-in copies them to where
# the suite asked (-o). Anything else fails loudly.
set -eu
[ "${1:-}" = build ] || { echo "go (node stand-in): no Go toolchain in the node: go $*" >&2; exit 1; }
shift
out="" tags="" pkg=""
while [ $# -gt 0 ]; do
	case "$1" in
	-o) out=$2; shift ;;
	-tags) tags=$2; shift ;;
	-*) ;;
	*) pkg=$1 ;;
	esac
	shift
done
here=$(dirname "$(readlink -f "$0")")
case "$tags|$pkg" in
"failpoint|./cmd/containerd-shim-runc-v2-robust") src=$here/prebuilt/shim-failpoint ;;
"|github.com/shimrobust/containerd-shim-runc-v2-robust/internal/fakeshim") src=$here/prebuilt/fakeshim ;;
*) echo "go (node stand-in): no prebuilt binary for: go build -tags '$tags' $pkg" >&2; exit 1 ;;
esac
[ -n "$out" ] || { echo "go (node stand-in): no -o" >&2; exit 1; }
cp "$src" "$out"

#!/usr/bin/env bash
# build.sh DIR OUT: builds the containerd daemon of the tools module in DIR
# (tests/daemons/containerdNN) and upstream's runc shim of the same
# containerd version into OUT (OUT/containerd, OUT/containerd-shim-runc-v2),
# as containerd's own Makefile builds them: the daemon with the tags that
# leave out the snapshotters needing C libraries, the shim static
# (CGO_ENABLED=0). Go's build cache makes a rebuild cheap.
set -euo pipefail
dir=$1 out=$2
cd "$dir"
mod=$(go list -m -f '{{.Path}}' all | grep -E '^github.com/containerd/containerd(/v2)?$')
ver=$(go list -m -f '{{.Version}}' "$mod")
ldflags="-X $mod/version.Version=$ver -X $mod/version.Revision=module-graph"
mkdir -p "$out"
go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ldflags" -o "$out/containerd" .
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/containerd-shim-runc-v2" "$mod/cmd/containerd-shim-runc-v2"
echo "built containerd $ver and its containerd-shim-runc-v2 in $out"

#!/usr/bin/env bash
# build.sh LINE OUT: compiles containerd's own integration tests of the
# version tests/peer/containerdXY's go.mod pins (LINE: 1.7, 2.3, 2.4) into
# OUT: integration.test (the CRI tests, integration/) and, on 2.x,
# client.test (integration/client), each with NAME.test.dir naming the
# package's source directory in the module cache (the runner reads which
# tests exist there). Flags as tests/daemons/build.sh builds the daemon
# (-trimpath, the tags that leave out snapshotters needing C libraries), so
# that Go's build cache shares the packages. Skipped when OUT's binaries are
# newer than the module's files.
set -euo pipefail
line=$1 out=$2
dir=$(cd "$(dirname "$0")" && pwd)/containerd${line//./}
test -d "$dir" || { echo "build.sh: no tools module $dir" >&2; exit 1; }
case $line in
1.*) mod=github.com/containerd/containerd; pkgs=(integration) ;;
*) mod=github.com/containerd/containerd/v2; pkgs=(integration integration/client) ;;
esac
mkdir -p "$out"
cd "$dir"
for p in "${pkgs[@]}"; do
	name=${p##*/}.test
	bin=$out/$name
	if [ -x "$bin" ] && [ -s "$bin.dir" ] && [ -z "$(find . -newer "$bin" -type f)" ]; then
		continue
	fi
	go test -c -trimpath -tags "no_btrfs no_devmapper no_zfs" -o "$bin" "$mod/$p"
	go list -f '{{.Dir}}' "$mod/$p" >"$bin.dir"
done
echo "containerd $line's tests: ${pkgs[*]} in $out"

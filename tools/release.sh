#!/usr/bin/env bash
# make release: static linux/amd64 and linux/arm64 binaries (CGO_ENABLED=0,
# -trimpath, the build target's version ldflags), a CycloneDX SBOM per
# binary from the module graph (cyclonedx-gomod, pinned by tools/sbom), a
# .deb per architecture built with dpkg-deb, and SHA256SUMS, into
# bin/release. Each artefact is checked after it is made (static ELF of
# the right machine; the .deb's fields and file list; nothing under /etc).
#
# The .deb installs /usr/bin/containerd-shim-runc-v2-robust, the gc
# service and timer (contrib/systemd, ExecStart pointed at /usr/bin)
# installed and never enabled, and the docs with contrib/kubernetes as
# examples. It never edits containerd's configuration: `install` is the
# operator's command. Its prerm disables the gc units when removed under a
# running systemd; its postrm removes the *.wants symlinks an operator's
# `systemctl enable` left (a remove or purge without systemd: a chroot, an
# image build), so no link names a unit that is gone (tests/deb).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
GO=${GO:-go}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo unknown)}
OUT=${OUT:-bin/release}
NAME=containerd-shim-runc-v2-robust
PKG=github.com/shimrobust/containerd-shim-runc-v2-robust
ARCHES=${ARCHES:-amd64 arm64}

# Debian versions start with a digit: a tag v1.2.3 is 1.2.3; else
# 0.0~git<commit date>.<hash>.
if [[ "$VERSION" =~ ^v?[0-9]+\.[0-9]+ ]]; then
	DEBVERSION=${VERSION#v}
	DEBVERSION=${DEBVERSION//-/+}
else
	DEBVERSION="0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short HEAD)"
	case "$VERSION" in *-dirty) DEBVERSION="$DEBVERSION+dirty" ;; esac
fi

fail() { echo "release: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (Debian's dpkg)"
command -v readelf >/dev/null || fail "readelf not found (binutils)"

rm -rf "$OUT"
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "=== cyclonedx-gomod (tools/sbom)"
(cd tools/sbom && "$GO" build -o "$TMP/cyclonedx-gomod" github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod)

for arch in $ARCHES; do
	bin="$OUT/$NAME-linux-$arch"
	echo "=== $bin ($VERSION)"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath \
		-ldflags "-X $PKG/cli.Version=$VERSION" -o "$bin" ./cmd/$NAME
	# Static: no program interpreter, no dynamic section; the right machine.
	readelf -l "$bin" | grep -q INTERP && fail "$bin is dynamically linked"
	readelf -d "$bin" 2>/dev/null | grep -q NEEDED && fail "$bin has NEEDED entries"
	want=$([ "$arch" = amd64 ] && echo 'X86-64' || echo 'AArch64')
	readelf -h "$bin" | grep -q "Machine:.*$want" || fail "$bin is not $want"
	"$GO" version -m "$bin" | grep -q 'CGO_ENABLED=0' || fail "$bin not built with CGO_ENABLED=0"
	"$GO" version -m "$bin" | grep -q -- '-trimpath=true' || fail "$bin not built with -trimpath"

	echo "=== SBOM $bin.cdx.json"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$TMP/cyclonedx-gomod" app -json -licenses=false \
		-main cmd/$NAME -output "$bin.cdx.json" "$REPO" 2>"$TMP/sbom.log" ||
		{ cat "$TMP/sbom.log" >&2; fail "cyclonedx-gomod failed"; }
	grep -q '"bomFormat": *"CycloneDX"' "$bin.cdx.json" || fail "$bin.cdx.json is not a CycloneDX BOM"
	grep -q 'pelletier/go-toml' "$bin.cdx.json" || fail "$bin.cdx.json does not list the module graph"

	echo "=== .deb ($arch, $DEBVERSION)"
	root="$TMP/deb-$arch"
	doc="$root/usr/share/doc/$NAME"
	install -D -m 0755 "$bin" "$root/usr/bin/$NAME"
	for u in contrib/systemd/*.service contrib/systemd/*.timer; do
		install -D -m 0644 "$u" "$root/lib/systemd/system/$(basename "$u")"
		sed -i "s#/usr/local/bin/$NAME#/usr/bin/$NAME#g" "$root/lib/systemd/system/$(basename "$u")"
	done
	grep -rq /usr/local "$root/lib/systemd/system" && fail "a unit still names /usr/local"
	install -d "$doc/examples/kubernetes"
	for f in README.md CHANGELOG.md BENCHMARKS.md; do
		[ -f "$f" ] && install -m 0644 "$f" "$doc/$f"
	done
	install -m 0644 contrib/kubernetes/* "$doc/examples/kubernetes/"
	cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $NAME
Source: https://$PKG

Files: *
Copyright: the $NAME authors
License: see the project's repository
EOF
	install -d "$root/DEBIAN"
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	cat >"$root/DEBIAN/control" <<EOF
Package: $NAME
Version: $DEBVERSION
Architecture: $arch
Maintainer: $NAME maintainers <noreply@invalid>
Installed-Size: $size
Recommends: containerd | containerd.io
Section: admin
Priority: optional
Homepage: https://$PKG
Description: robust drop-in for containerd's io.containerd.runc.v2 shim
 Serves containerd's runc runtime by delegating every command to upstream's
 containerd-shim-runc-v2 except delete, whose clean-up it owns; gc removes
 what dead shims left. The package does not configure containerd: run
 "$NAME install" (see README.md in /usr/share/doc/$NAME).
 The gc service and timer are installed disabled.
EOF
	cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
	systemctl disable --now containerd-shim-robust-gc.timer containerd-shim-robust-gc.service >/dev/null 2>&1 || true
fi
exit 0
EOF
	cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = purge ]; then
	for l in /etc/systemd/system/*.wants/containerd-shim-robust-gc.service /etc/systemd/system/*.wants/containerd-shim-robust-gc.timer; do
		if [ -L "\$l" ]; then rm -f "\$l"; fi
	done
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
fi
exit 0
EOF
	chmod 0755 "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
	deb="$OUT/${NAME}_${DEBVERSION}_$arch.deb"
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
	# The package as built: fields, and files where they belong.
	dpkg-deb --info "$deb" >"$TMP/info"
	grep -q "Architecture: $arch" "$TMP/info" || fail "$deb: architecture"
	grep -q "Package: $NAME" "$TMP/info" || fail "$deb: package name"
	grep -q 'postinst' "$TMP/info" && fail "$deb has a postinst (nothing is enabled or configured at install)"
	dpkg-deb --contents "$deb" >"$TMP/contents"
	for f in ./usr/bin/$NAME ./lib/systemd/system/containerd-shim-robust-gc.service \
		./lib/systemd/system/containerd-shim-robust-gc.timer ./usr/share/doc/$NAME/README.md \
		./usr/share/doc/$NAME/copyright; do
		grep -q " $f\$" "$TMP/contents" || fail "$deb lacks $f"
	done
	grep -q ' \./etc/' "$TMP/contents" && fail "$deb ships files under /etc"
	grep -Eq 'root/root .*usr/bin/'"$NAME"'$' "$TMP/contents" || fail "$deb: binary not owned by root"
	# Installed and purged with dpkg into an empty root of its own (never
	# this machine's): the files land, the binary runs, purge leaves nothing.
	if [ "$arch" = "$(dpkg --print-architecture)" ] && command -v busybox >/dev/null; then
		r="$TMP/root-$arch"
		mkdir -p "$r"/var/lib/dpkg/{info,updates,triggers,alternatives} "$r/bin" "$r/var/log" "$r/dev"
		touch "$r"/var/lib/dpkg/{status,available} "$r/dev/null"
		cp "$(command -v busybox)" "$r/bin/busybox" && ln -s busybox "$r/bin/sh"
		d() { dpkg --root="$r" --force-not-root --log="$r/var/log/dpkg.log" "$@"; }
		d -i "$deb" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; fail "$deb: dpkg -i"; }
		v=$("$r/usr/bin/$NAME" -v 2>&1 || true)
		grep -q "Version: $VERSION" <<<"$v" || fail "$deb: the installed binary does not say $VERSION: $v"
		d --purge "$NAME" >"$TMP/dpkg.log" 2>&1 || { cat "$TMP/dpkg.log" >&2; fail "$deb: dpkg --purge"; }
		left=$(cd "$r" && find . -mindepth 1 \( -path ./var -o -path ./bin -o -path ./dev \) -prune -o -print)
		[ -z "$left" ] || fail "$deb: purge left $left"
		echo "    dpkg -i and --purge in an empty root: clean"
	fi
done

(cd "$OUT" && sha256sum -- * >SHA256SUMS && sha256sum -c --quiet SHA256SUMS)
echo "=== $OUT"
ls -l "$OUT"

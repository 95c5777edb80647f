#!/bin/sh
# Debian packages tests/node needs on the host: QEMU (qemu-system-x86_64,
# TCG when /dev/kvm is absent), debootstrap to build the node image from
# Debian's packages, and e2fsprogs' mkfs.ext4 (-d). Installed when missing
# (root).
set -eu
missing=""
PATH="$PATH:/usr/sbin:/sbin"
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
command -v mkfs.ext4 >/dev/null 2>&1 || missing="$missing e2fsprogs"
if [ -n "$missing" ]; then
	echo "installing Debian packages:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

#!/bin/sh
# Builds the production node image (issue 18): Debian 12 from Debian's own
# packages by debootstrap, from the mirror apt already uses on this machine
# (never a hard-coded host), booted by tests/node with QEMU.
#
#   tests/node/image.sh [CACHE]      (root; CACHE default /var/cache/robust-node)
#
# The image is keyed by the hash of this recipe (this file): it is built once
# into CACHE/<hash>/ (node.img, vmlinuz, initrd.img, versions) and rebuilt
# only when the recipe changes. Prints the image directory on its last line.
#
# What the node is: systemd as PID 1 on the unified cgroup v2 hierarchy
# (the kernel command line is the harness's), Debian's kernel, containerd
# 1.6.20 and runc, gcc and a static libc (tests/e2e compiles C helpers);
# its own containerd.service disabled (every suite starts
# its own daemons). A 9p share (tag "share") is mounted at /share; the unit
# robust-suite.service runs /share/suite.sh, writes its output to
# /share/out/console.log and to the serial console, its exit status to
# /share/out/status, then powers the node off, whatever happened.
set -eu
PATH="$PATH:/usr/sbin:/sbin"
CACHE=${1:-/var/cache/robust-node}
SELF=$(readlink -f "$0")
HASH=$(sha256sum "$SELF" | cut -c1-16)
DIR="$CACHE/$HASH"
if [ -f "$DIR/done" ]; then
	echo "node image: cached (recipe $HASH)" >&2
	echo "$DIR"
	exit 0
fi
[ "$(id -u)" = 0 ] || { echo "FATAL: the node image is built as root (debootstrap)" >&2; exit 1; }
for t in debootstrap mkfs.ext4; do
	command -v $t >/dev/null || { echo "FATAL: $t not found (run tests/node/deps.sh)" >&2; exit 1; }
done

# The mirror apt uses here: deb822 sources first, then sources.list.
MIRROR=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v -- '-security' | head -n1)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || { echo "FATAL: no Debian mirror in apt's sources" >&2; exit 1; }

PACKAGES=systemd,systemd-sysv,udev,dbus,linux-image-amd64,containerd,runc,busybox-static,containernetworking-plugins,iproute2,kmod,procps,util-linux,mount,fuse3,gcc,libc6-dev
SUITE=bookworm

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs
echo "node image: debootstrap $SUITE from $MIRROR (recipe $HASH)" >&2
debootstrap --variant=minbase --include=$PACKAGES $SUITE "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -n 30 "$WORK/debootstrap.log" >&2
	echo "FATAL: debootstrap failed" >&2
	exit 1
}

echo node >"$ROOTFS/etc/hostname"
echo '/dev/vda / ext4 rw 0 1' >"$ROOTFS/etc/fstab"
rm -f "$ROOTFS/etc/machine-id" "$ROOTFS/var/lib/dbus/machine-id"
tr -d - </proc/sys/kernel/random/uuid >"$ROOTFS/etc/machine-id"
printf '9p\n9pnet_virtio\nfuse\n' >"$ROOTFS/etc/modules-load.d/share.conf"
rm -rf "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/lib/apt/lists/"*
passwd -R "$ROOTFS" -d root >/dev/null 2>&1 || true

# Units: nothing a test node does not need, the share, the suite.
SD=$ROOTFS/etc/systemd/system
for u in systemd-firstboot.service serial-getty@ttyS0.service getty@tty1.service \
	apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
	systemd-timesyncd.service containerd.service; do
	ln -sf /dev/null "$SD/$u"
done
cat >"$SD/share.mount" <<'UNIT'
[Unit]
Description=The host's share (binaries under test, results)
After=systemd-modules-load.service

[Mount]
What=share
Where=/share
Type=9p
Options=trans=virtio,version=9p2000.L,msize=262144
UNIT
cat >"$SD/robust-suite.service" <<'UNIT'
[Unit]
Description=The suite under test (/share/suite.sh)
Requires=share.mount
After=share.mount multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
Environment=HOME=/root PATH=/share/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WorkingDirectory=/share
ExecStart=/bin/bash -o pipefail -c 'mkdir -p /share/out; /bin/bash /share/suite.sh 2>&1 | tee /share/out/console.log >/dev/ttyS0; s=$?; echo $s >/share/out/status; sync; exit $s'
ExecStopPost=-/bin/systemctl poweroff --no-block
StandardOutput=journal
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$SD/multi-user.target.wants" "$ROOTFS/share"
ln -sf ../robust-suite.service "$SD/multi-user.target.wants/robust-suite.service"

# What the node is, for the README's table.
KVER=$(ls "$ROOTFS/lib/modules" | sort -V | tail -n1)
{
	echo "recipe=$HASH"
	echo "mirror=$MIRROR"
	echo "kernel=$KVER"
	for p in systemd linux-image-amd64 containerd runc busybox-static; do
		echo "$p=$(chroot "$ROOTFS" dpkg-query -W -f '${Version}' $p)"
	done
} >"$WORK/versions"

cp "$ROOTFS/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$WORK/initrd.img"
mkfs.ext4 -q -L root -d "$ROOTFS" "$WORK/node.img" 3G
rm -rf "$ROOTFS"
mkdir -p "$DIR"
mv "$WORK/node.img" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/versions" "$DIR/"
touch "$DIR/done"
echo "node image: built in $DIR" >&2
cat "$DIR/versions" >&2
echo "$DIR"

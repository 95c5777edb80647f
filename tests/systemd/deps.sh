#!/bin/sh
# Debian packages tests/systemd needs (a private systemd with D-Bus, and
# util-linux's unshare, nsenter, setpriv), installed when missing (root).
set -eu
missing=""
command -v systemctl >/dev/null 2>&1 && [ -x /lib/systemd/systemd ] || missing="$missing systemd"
command -v dbus-daemon >/dev/null 2>&1 || missing="$missing dbus"
for t in unshare nsenter setpriv; do
	PATH="$PATH:/usr/sbin:/sbin" command -v "$t" >/dev/null 2>&1 || { missing="$missing util-linux"; break; }
done
if [ -n "$missing" ]; then
	echo "installing Debian packages:$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

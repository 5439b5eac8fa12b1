#!/bin/sh
# pibake activator for node {{.Hostname}}: installs the node's payload from
# the boot partition into the root file system, once, then removes the
# secrets from the boot partition and its own arguments from cmdline.txt.
# Every step is safe to repeat, so a power cut at any line is harmless: the
# next boot runs it again.
set -eu

ROOT=${PIBAKE_ROOT:-}
BOOT=${PIBAKE_BOOT:-$ROOT/boot/firmware}
if [ ! -d "$BOOT/pibake" ] && [ -z "${PIBAKE_BOOT:-}" ] && [ -d "$ROOT/boot/pibake" ]; then
	BOOT=$ROOT/boot
fi
PAYLOAD=$BOOT/pibake
METHOD=${PIBAKE_METHOD:-{{.Method}}}

mkdir -p "$ROOT/var/log/pibake"
exec >>"$ROOT/var/log/pibake/activate.log" 2>&1
log() { printf '%s activate: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
log "start (method $METHOD, payload $PAYLOAD)"

# install SRC DEST MODE copies through a temporary name, so DEST is either
# the old file or the whole new one.
install_file() {
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.pibake-tmp"
	chmod "$3" "$2.pibake-tmp"
	mv -f "$2.pibake-tmp" "$2"
	log "installed $2 ($3)"
}

if [ ! -f "$PAYLOAD/node.env" ]; then
	log "no payload at $PAYLOAD/node.env; nothing to do"
	exit 0
fi
# shellcheck source=/dev/null
. "$PAYLOAD/node.env"

# Hostname: /etc/hostname and the 127.0.1.1 line of /etc/hosts.
printf '%s\n' "$PIBAKE_HOSTNAME" >"$ROOT/etc/hostname.pibake-tmp"
mv -f "$ROOT/etc/hostname.pibake-tmp" "$ROOT/etc/hostname"
if grep -q '^127\.0\.1\.1[[:space:]]' "$ROOT/etc/hosts" 2>/dev/null; then
	sed "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1	$PIBAKE_HOSTNAME/" "$ROOT/etc/hosts" >"$ROOT/etc/hosts.pibake-tmp"
else
	{ cat "$ROOT/etc/hosts" 2>/dev/null || true; printf '127.0.1.1\t%s\n' "$PIBAKE_HOSTNAME"; } >"$ROOT/etc/hosts.pibake-tmp"
fi
chmod 644 "$ROOT/etc/hosts.pibake-tmp"
mv -f "$ROOT/etc/hosts.pibake-tmp" "$ROOT/etc/hosts"
log "hostname $PIBAKE_HOSTNAME"

# The k3s configuration holds the token: root only.
if [ -f "$PAYLOAD/k3s-config.yaml" ]; then
	install_file "$PAYLOAD/k3s-config.yaml" "$ROOT/etc/rancher/k3s/config.yaml" 600
fi

# NetworkManager keyfiles (static address, Wi-Fi): root only, or NM ignores them.
for f in "$PAYLOAD"/*.nmconnection; do
	[ -f "$f" ] || continue
	install_file "$f" "$ROOT/etc/NetworkManager/system-connections/${f##*/}" 600
done

# SSH keys wait in /var/lib/pibake until the first-boot unit runs, after
# the OS has renamed its user from userconf.txt.
if [ -f "$PAYLOAD/authorized_keys" ]; then
	install_file "$PAYLOAD/authorized_keys" "$ROOT/var/lib/pibake/authorized_keys" 600
fi

if [ -n "${PIBAKE_TIMEZONE:-}" ]; then
	if [ -e "$ROOT/usr/share/zoneinfo/$PIBAKE_TIMEZONE" ]; then
		ln -sf "/usr/share/zoneinfo/$PIBAKE_TIMEZONE" "$ROOT/etc/localtime"
		printf '%s\n' "$PIBAKE_TIMEZONE" >"$ROOT/etc/timezone"
		log "timezone $PIBAKE_TIMEZONE"
	else
		log "timezone $PIBAKE_TIMEZONE not found in /usr/share/zoneinfo; left unchanged"
	fi
fi

# Air-gap files travel on the boot partition.
if [ -f "$PAYLOAD/airgap/k3s" ]; then
	install_file "$PAYLOAD/airgap/k3s" "$ROOT/usr/local/bin/k3s" 755
fi
for f in "$PAYLOAD"/airgap/k3s-airgap-images-*; do
	[ -f "$f" ] || continue
	install_file "$f" "$ROOT/var/lib/rancher/k3s/agent/images/${f##*/}" 644
done
if [ -f "$PAYLOAD/airgap/install.sh" ]; then
	install_file "$PAYLOAD/airgap/install.sh" "$ROOT/usr/local/lib/pibake/install.sh" 755
fi

# The first-boot unit and what it runs.
install_file "$PAYLOAD/node.env" "$ROOT/etc/pibake/node.env" 644
install_file "$PAYLOAD/firstboot.sh" "$ROOT/usr/local/lib/pibake/firstboot.sh" 755
install_file "$PAYLOAD/pibake-firstboot.service" "$ROOT/etc/systemd/system/pibake-firstboot.service" 644
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/pibake-firstboot.service "$ROOT/etc/systemd/system/multi-user.target.wants/pibake-firstboot.service"

# Everything is in place: remove the secrets from the boot partition, which
# is FAT and readable by every user.
rm -f "$PAYLOAD/k3s-config.yaml" "$PAYLOAD"/*.nmconnection "$PAYLOAD/authorized_keys" "$BOOT/network-config"
rm -rf "$PAYLOAD/airgap"
log "secrets removed from $BOOT"

# Remove exactly this activator's own arguments from cmdline.txt, keeping
# every other argument in order.
if [ -n "${PIBAKE_CMDLINE_REMOVE:-}" ] && [ -f "$BOOT/cmdline.txt" ]; then
	awk -v drop="$PIBAKE_CMDLINE_REMOVE" 'BEGIN { n = split(drop, d, " "); for (i = 1; i <= n; i++) skip[d[i]] = 1 }
		NR == 1 { out = ""; for (i = 1; i <= NF; i++) if (!($i in skip)) out = out (out == "" ? "" : " ") $i; print out }' \
		"$BOOT/cmdline.txt" >"$BOOT/cmdline.txt.pibake-tmp"
	mv -f "$BOOT/cmdline.txt.pibake-tmp" "$BOOT/cmdline.txt"
	log "cmdline.txt: removed $PIBAKE_CMDLINE_REMOVE"
fi

mkdir -p "$ROOT/var/lib/pibake"
date -u +%Y-%m-%dT%H:%M:%SZ >"$ROOT/var/lib/pibake/activated"
sync

if [ "$METHOD" = cloud-init ] && [ -z "$ROOT" ]; then
	# cloud-init runs this late in a boot that has passed multi-user.target:
	# start the unit now instead of at the next boot.
	systemctl daemon-reload
	systemctl start --no-block pibake-firstboot.service
fi
log "done"

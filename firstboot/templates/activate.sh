#!/bin/sh
# pibake activator: installs this node's payload from the boot partition
# into the root file system, then removes the secrets from the boot
# partition and its own arguments from cmdline.txt.
#
# It never exits non-zero. With the systemd-run method a failed run would
# end the boot through systemd's failure action, so every failure is
# recorded (/var/log/pibake/activate.log and the status record) and the
# activation boot is retried at most PIBAKE_ACTIVATE_ATTEMPTS times; after
# that the activator removes its arguments and the Pi boots its normal
# system, reachable over SSH when the recipe enabled it, with the reason on
# the boot partition. Every step is safe to repeat, so a power cut at any
# line only means the next boot runs it again.

ROOT=${PIBAKE_ROOT:-}
BOOT=${PIBAKE_BOOT:-$ROOT/boot/firmware}
if [ ! -d "$BOOT/pibake" ] && [ -z "${PIBAKE_BOOT:-}" ] && [ -d "$ROOT/boot/pibake" ]; then
	BOOT=$ROOT/boot
fi
PAYLOAD=$BOOT/pibake
METHOD=${PIBAKE_METHOD:-systemd-run}
ATTEMPTS=${PIBAKE_ACTIVATE_ATTEMPTS:-3}
PIBAKE_SCRIPT=activate
LOG=$ROOT/var/log/pibake/activate.log
if ! { mkdir -p "$ROOT/var/log/pibake" && : >>"$LOG"; } 2>/dev/null; then
	LOG=$PAYLOAD/activate.log # the root file system is not writable
fi
exec >>"$LOG" 2>&1

if [ ! -f "$PAYLOAD/node.env" ] || [ ! -f "$PAYLOAD/lib.sh" ]; then
	echo "$(date -u) activate: no pibake payload in $PAYLOAD; nothing to do"
	exit 0
fi
# shellcheck source=/dev/null
. "$PAYLOAD/node.env"
# shellcheck source=lib.sh
. "$PAYLOAD/lib.sh"

# install_file SRC DEST MODE copies through a temporary name, so DEST is
# either the old file or the whole new one.
install_file() {
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.pibake-tmp"
	chmod "$3" "$2.pibake-tmp"
	mv -f "$2.pibake-tmp" "$2"
	log "installed $2 ($3)"
}

# systemctl_root runs systemctl on the root file system being set up.
systemctl_root() {
	if [ -n "$ROOT" ]; then
		systemctl --root="$ROOT" "$@"
	else
		systemctl "$@"
	fi
}

set_hostname() {
	printf '%s\n' "$PIBAKE_HOSTNAME" >"$ROOT/etc/hostname.pibake-tmp"
	mv -f "$ROOT/etc/hostname.pibake-tmp" "$ROOT/etc/hostname"
	if grep -q '^127\.0\.1\.1[[:space:]]' "$ROOT/etc/hosts" 2>/dev/null; then
		sed "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1	$PIBAKE_HOSTNAME/" "$ROOT/etc/hosts" >"$ROOT/etc/hosts.pibake-tmp"
	else
		{
			cat "$ROOT/etc/hosts" 2>/dev/null || true
			printf '127.0.1.1\t%s\n' "$PIBAKE_HOSTNAME"
		} >"$ROOT/etc/hosts.pibake-tmp"
	fi
	chmod 644 "$ROOT/etc/hosts.pibake-tmp"
	mv -f "$ROOT/etc/hosts.pibake-tmp" "$ROOT/etc/hosts"
	log "hostname $PIBAKE_HOSTNAME"
}

# enable_wifi does offline what raspi-config's do_wifi_country does on a
# running Pi (RPi-Distro/raspi-config, do_wifi_country): pi-gen boots the
# radio switched off when no country was set at build time
# (stage2/02-net-tweaks writes WirelessEnabled=false), so NetworkManager's
# state file gets WirelessEnabled=true and systemd-rfkill's saved wlan
# states are set to unblocked. The country itself is on cmdline.txt.
enable_wifi() {
	state=$ROOT/var/lib/NetworkManager/NetworkManager.state
	if [ -f "$state" ] && grep -q '^WirelessEnabled=' "$state"; then
		sed 's/^WirelessEnabled=.*/WirelessEnabled=true/' "$state" >"$state.pibake-tmp"
		mv -f "$state.pibake-tmp" "$state"
	elif [ -f "$state" ]; then
		# No key means NetworkManager's default, which is on; say so anyway.
		if grep -q '^\[main\]' "$state"; then
			sed 's/^\[main\]$/[main]\nWirelessEnabled=true/' "$state" >"$state.pibake-tmp"
		else
			{ printf '[main]\nWirelessEnabled=true\n'; cat "$state"; } >"$state.pibake-tmp"
		fi
		mv -f "$state.pibake-tmp" "$state"
	fi
	for f in "$ROOT"/var/lib/systemd/rfkill/*:wlan; do
		[ -f "$f" ] || continue
		echo 0 >"$f"
	done
	if [ -z "$ROOT" ] && [ "$METHOD" = cloud-init ]; then
		# This boot is already running with the radio off.
		rfkill unblock wifi || true
		iw reg set "$PIBAKE_WIFI_COUNTRY" 2>/dev/null || true
		nmcli radio wifi on || true
	fi
	log "Wi-Fi radio enabled (country $PIBAKE_WIFI_COUNTRY)"
}

# set_sudo installs the login user's passwordless sudo rule, checked with
# visudo first (a broken sudoers file locks everyone out of sudo), or
# removes the passwordless rules the OS may ship when the recipe wants a
# password asked.
set_sudo() {
	rule=$ROOT/etc/sudoers.d/010_$PIBAKE_USER-nopasswd
	if [ -f "$PAYLOAD/sudoers" ]; then
		if command -v visudo >/dev/null 2>&1 && ! visudo -c -q -f "$PAYLOAD/sudoers"; then
			echo "visudo rejects $PAYLOAD/sudoers" >&2
			return 1
		fi
		install_file "$PAYLOAD/sudoers" "$rule" 440
	else
		# raspi-config do_sudo_pass 0 removes the same files.
		rm -f "$rule" "$ROOT/etc/sudoers.d/010_pi-nopasswd" "$ROOT/etc/sudoers.d/90-cloud-init-users"
		log "no passwordless sudo for $PIBAKE_USER"
	fi
}

enable_ssh() {
	if [ -z "$ROOT" ] && [ "$METHOD" = cloud-init ]; then
		systemctl enable --now --no-block ssh
	else
		systemctl_root enable ssh
	fi
	log "ssh enabled"
}

# install_ca puts the cluster CA pibake generated where k3s looks for a
# custom CA at its first start (docs/cli/certificate.md): every file
# must be there, because k3s silently replaces a missing pair with a new
# self-signed CA (pkg/daemons/control/deps, createSigningCertKey), which
# the joining nodes' tokens would not match. Keys 0600, certificates
# 0644, as k3s writes its own (dynamiclistener cert/io.go); directories
# 0700, as k3s makes server/.
install_ca() {
	tls=$ROOT/var/lib/rancher/k3s/server/tls
	for f in $PIBAKE_CA_FILES; do
		if [ ! -f "$PAYLOAD/tls/$f" ]; then
			echo "the cluster CA file tls/$f is missing from $PAYLOAD: k3s would make its own CA, which the joining nodes would refuse" >&2
			return 1
		fi
	done
	mkdir -p "$tls/etcd"
	chmod 700 "$ROOT/var/lib/rancher/k3s/server" "$tls" "$tls/etcd"
	for f in $PIBAKE_CA_FILES; do
		case $f in
		*.key) install_file "$PAYLOAD/tls/$f" "$tls/$f" 600 ;;
		*) install_file "$PAYLOAD/tls/$f" "$tls/$f" 644 ;;
		esac
	done
}

install_payload() {
	set_hostname

	# The k3s configuration holds the token: root only.
	install_file "$PAYLOAD/k3s-config.yaml" "$ROOT/etc/rancher/k3s/config.yaml" 600

	if [ -n "$PIBAKE_CA_FILES" ]; then
		install_ca
	fi
	# The node's password, derived at build time so that a re-flashed
	# node rejoins under its name: k3s uses a password file it finds as
	# it is (pkg/agent/config, ensureNodePassword).
	if [ -f "$PAYLOAD/node-password" ]; then
		install_file "$PAYLOAD/node-password" "$ROOT/etc/rancher/node/password" 600
	fi

	# NetworkManager keyfiles (static address, Wi-Fi): root only, or NM
	# ignores them.
	for f in "$PAYLOAD"/*.nmconnection; do
		[ -f "$f" ] || continue
		install_file "$f" "$ROOT/etc/NetworkManager/system-connections/${f##*/}" 600
	done
	if [ -n "$PIBAKE_WIFI_COUNTRY" ]; then
		enable_wifi
	fi

	# SSH keys wait in /var/lib/pibake until the first-boot unit runs,
	# after the OS has renamed its user from userconf.txt.
	if [ -f "$PAYLOAD/authorized_keys" ]; then
		install_file "$PAYLOAD/authorized_keys" "$ROOT/var/lib/pibake/authorized_keys" 600
	fi
	set_sudo
	if [ "$PIBAKE_SSH" = 1 ]; then
		enable_ssh
	fi

	if [ -n "$PIBAKE_TIMEZONE" ]; then
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
	install_file "$PAYLOAD/lib.sh" "$ROOT/usr/local/lib/pibake/lib.sh" 644
	install_file "$PAYLOAD/bootfacts.sh" "$ROOT/usr/local/lib/pibake/bootfacts.sh" 644
	install_file "$PAYLOAD/firstboot.sh" "$ROOT/usr/local/lib/pibake/firstboot.sh" 755
	install_file "$PAYLOAD/pibake-firstboot.service" "$ROOT/etc/systemd/system/pibake-firstboot.service" 644
	mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
	ln -sf /etc/systemd/system/pibake-firstboot.service "$ROOT/etc/systemd/system/multi-user.target.wants/pibake-firstboot.service"

	# The reporter, with this node's key (root only: it signs the node's
	# reports).
	if [ -n "$PIBAKE_REPORT_URL" ]; then
		if [ ! -f "$PAYLOAD/report.key" ]; then
			echo "the report key is missing from $PAYLOAD" >&2
			return 1
		fi
		install_file "$PAYLOAD/report.key" "$ROOT/etc/pibake/report.key" 600
		install_file "$PAYLOAD/report.sh" "$ROOT/usr/local/lib/pibake/report.sh" 755
		install_file "$PAYLOAD/pibake-report.service" "$ROOT/etc/systemd/system/pibake-report.service" 644
		ln -sf /etc/systemd/system/pibake-report.service "$ROOT/etc/systemd/system/multi-user.target.wants/pibake-report.service"
	fi
	mkdir -p "$ROOT/var/lib/pibake"
	now >"$ROOT/var/lib/pibake/activated"
}

# remove_secrets deletes what the boot partition must not keep: it is FAT,
# readable by every user of the running system.
remove_secrets() {
	rm -f "$PAYLOAD/k3s-config.yaml" "$PAYLOAD"/*.nmconnection "$PAYLOAD/authorized_keys" "$PAYLOAD/sudoers" "$PAYLOAD/node-password" "$PAYLOAD/report.key" "$BOOT/network-config"
	rm -rf "$PAYLOAD/airgap" "$PAYLOAD/tls"
	log "secrets removed from $BOOT"
}

# remove_arguments removes exactly this activator's own arguments from
# cmdline.txt, keeping every other argument in order (unlike Imager's
# firstrun.sh, whose sed drops everything after systemd.run).
remove_arguments() {
	[ -n "$PIBAKE_CMDLINE_REMOVE" ] && [ -f "$BOOT/cmdline.txt" ] || return 0
	awk -v drop="$PIBAKE_CMDLINE_REMOVE" 'BEGIN { n = split(drop, d, " "); for (i = 1; i <= n; i++) skip[d[i]] = 1 }
		NR == 1 { out = ""; for (i = 1; i <= NF; i++) if (!($i in skip)) out = out (out == "" ? "" : " ") $i; print out }' \
		"$BOOT/cmdline.txt" >"$BOOT/cmdline.txt.pibake-tmp" &&
		mv -f "$BOOT/cmdline.txt.pibake-tmp" "$BOOT/cmdline.txt" &&
		log "cmdline.txt: removed $PIBAKE_CMDLINE_REMOVE"
}

attempt=$(cat "$PAYLOAD/activate.attempts" 2>/dev/null || echo 0)
case $attempt in '' | *[!0-9]*) attempt=0 ;; esac
attempt=$((attempt + 1))
echo "$attempt" >"$PAYLOAD/activate.attempts"
log "start (method $METHOD, payload $PAYLOAD, attempt $attempt of $ATTEMPTS)"
status activate running "attempt $attempt of $ATTEMPTS"

# The work runs in a subshell with set -e, so the first failing step ends
# it and the outcome is one exit status; this shell goes on to record it.
while :; do
	(
		set -eu
		install_payload
	)
	rc=$?
	if [ "$rc" -eq 0 ] || [ "$METHOD" != cloud-init ] || [ "$attempt" -ge "$ATTEMPTS" ]; then
		break
	fi
	# cloud-init runs the activator once per instance: retry in place.
	log "attempt $attempt failed (exit $rc); retrying in ${PIBAKE_RETRY_DELAY:-10}s"
	sleep "${PIBAKE_RETRY_DELAY:-10}"
	attempt=$((attempt + 1))
	echo "$attempt" >"$PAYLOAD/activate.attempts"
done

if [ "$rc" -eq 0 ]; then
	remove_secrets
	remove_arguments
	rm -f "$PAYLOAD/activate.attempts"
	status activate ok "installed into the root file system"
	sync
	if [ "$METHOD" = cloud-init ] && [ -z "$ROOT" ]; then
		# cloud-init runs this late in a boot that has passed
		# multi-user.target: start the unit now instead of at the next boot.
		systemctl daemon-reload
		systemctl start --no-block pibake-firstboot.service
		if [ -n "$PIBAKE_REPORT_URL" ]; then
			systemctl start --no-block pibake-report.service
		fi
	fi
	log "done"
	exit 0
fi

if [ "$attempt" -lt "$ATTEMPTS" ]; then
	status activate failed "attempt $attempt of $ATTEMPTS failed (exit $rc); the next boot tries again"
	sync
	exit 0
fi
# Give up: boot the normal system rather than fail every boot. The
# secrets go too, since nothing will install them now.
remove_secrets
remove_arguments
status_final activate failed "gave up after $attempt attempts (last exit $rc); the Pi boots without pibake's configuration: see /var/log/pibake/activate.log, then re-flash"
sync
exit 0

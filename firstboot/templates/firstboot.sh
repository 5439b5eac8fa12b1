#!/bin/sh
# pibake first boot for node {{.Hostname}}: apt, then k3s. Run by
# pibake-firstboot.service until it succeeds once; a failure is logged to
# /var/log/pibake/firstboot.log and retried at the next boot.
set -u

ROOT=${PIBAKE_ROOT:-}
# shellcheck source=/dev/null
. "$ROOT/etc/pibake/node.env"

RETRY_DELAY=${PIBAKE_RETRY_DELAY:-5}
TIME_WAIT=${PIBAKE_TIME_WAIT:-120}
SERVER_WAIT=${PIBAKE_SERVER_WAIT:-1800}
BATCH_DELAY=${PIBAKE_BATCH_DELAY:-60}
STATE=$ROOT/var/lib/pibake

mkdir -p "$ROOT/var/log/pibake" "$STATE"
exec >>"$ROOT/var/log/pibake/firstboot.log" 2>&1
log() { printf '%s firstboot: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
fail() { log "FAILED: $*; will retry at next boot"; exit 1; }

# retry N CMD... runs CMD up to N times, doubling the pause (at most 60 s).
retry() {
	attempts=$1
	shift
	delay=$RETRY_DELAY
	n=1
	until "$@"; do
		if [ "$n" -ge "$attempts" ]; then
			log "gave up after $n attempts: $*"
			return 1
		fi
		log "attempt $n/$attempts failed, retrying in ${delay}s: $*"
		sleep "$delay"
		n=$((n + 1))
		delay=$((delay * 2))
		[ "$delay" -le 60 ] || delay=60
	done
}

log "start: $PIBAKE_HOSTNAME ($PIBAKE_ROLE), build $PIBAKE_BUILD_ID"

# A Pi has no real-time clock: apt refuses signatures "from the future"
# until NTP has set the time. Wait for it, but not forever.
waited=0
while [ ! -e "$ROOT/run/systemd/timesync/synchronized" ] && [ "$waited" -lt "$TIME_WAIT" ]; do
	sleep 5
	waited=$((waited + 5))
done
if [ -e "$ROOT/run/systemd/timesync/synchronized" ]; then
	log "clock synchronised"
else
	log "clock not synchronised after ${TIME_WAIT}s; going on"
fi

# SSH keys for the login user, now that userconf.txt has named it.
if [ -f "$STATE/authorized_keys" ] && [ -n "${PIBAKE_USER:-}" ]; then
	home=$(getent passwd "$PIBAKE_USER" | cut -d: -f6)
	if [ -n "$home" ] && [ -d "$ROOT$home" ]; then
		mkdir -p "$ROOT$home/.ssh"
		cp "$STATE/authorized_keys" "$ROOT$home/.ssh/authorized_keys"
		chmod 700 "$ROOT$home/.ssh"
		chmod 600 "$ROOT$home/.ssh/authorized_keys"
		chown -R "$PIBAKE_USER:" "$ROOT$home/.ssh"
		log "authorized_keys installed for $PIBAKE_USER"
	else
		log "user $PIBAKE_USER has no home directory yet; keys stay in $STATE/authorized_keys"
	fi
fi

export DEBIAN_FRONTEND=noninteractive
# An offline apt update is not fatal: k3s does not need it. Package installs
# below are, and are retried at the next boot.
# apt-get update exits 0 when it cannot fetch (only warning "Failed to
# fetch"); --error-on=any (apt >= 2.1.16) makes that a failure to retry.
if retry 5 apt-get update --error-on=any; then
	log "apt-get update done"
else
	log "apt-get update failed; continuing with the package lists on the image"
fi

if [ "$PIBAKE_APT_UPGRADE" = 1 ]; then
	retry 3 apt-get -y -o Dpkg::Options::=--force-confold full-upgrade || fail "apt-get full-upgrade"
fi

if [ "$PIBAKE_MODULES_EXTRA" = 1 ]; then
	# linux-modules-extra-raspi is Ubuntu's package; Raspberry Pi OS builds
	# vxlan into its kernel package and has no such package.
	if apt-cache show linux-modules-extra-raspi >/dev/null 2>&1; then
		retry 3 apt-get install -y linux-modules-extra-raspi || fail "install linux-modules-extra-raspi"
	else
		log "linux-modules-extra-raspi is not available on this OS (it is Ubuntu's); skipped"
	fi
fi

if [ -n "$PIBAKE_APT_PACKAGES" ]; then
	# shellcheck disable=SC2086 # one word per package
	retry 3 apt-get install -y --no-install-recommends $PIBAKE_APT_PACKAGES || fail "install $PIBAKE_APT_PACKAGES"
fi

# Joining nodes wait for the server's API, and agents wait for their batch,
# so a fleet does not hit the server all at once.
if [ -n "$PIBAKE_JOIN_URL" ]; then
	waited=0
	delay=$RETRY_DELAY
	until curl -ksS --max-time 5 -o /dev/null "$PIBAKE_JOIN_URL/ping"; do
		if [ "$waited" -ge "$SERVER_WAIT" ]; then
			log "server $PIBAKE_JOIN_URL still not answering after ${waited}s; installing anyway (k3s keeps retrying)"
			break
		fi
		log "server $PIBAKE_JOIN_URL not answering yet; next try in ${delay}s"
		sleep "$delay"
		waited=$((waited + delay))
		delay=$((delay * 2))
		[ "$delay" -le 60 ] || delay=60
	done
fi
if [ "$PIBAKE_JOIN_BATCH" -gt 0 ]; then
	pause=$((PIBAKE_JOIN_BATCH * BATCH_DELAY))
	log "join batch $PIBAKE_JOIN_BATCH: waiting ${pause}s"
	sleep "$pause"
fi

# install.sh does not read config.yaml to pick the role: pass it. Its own
# start blocks until an agent has joined: skip it and start without waiting.
if [ "$PIBAKE_AIRGAP" = 1 ]; then
	script=$ROOT/usr/local/lib/pibake/install.sh
	export INSTALL_K3S_SKIP_DOWNLOAD=true
else
	script=$STATE/install.sh
	retry 5 curl -sSfL --max-time 60 -o "$script" "$PIBAKE_INSTALL_SCRIPT_URL" || fail "download $PIBAKE_INSTALL_SCRIPT_URL"
fi
export INSTALL_K3S_EXEC="$PIBAKE_ROLE" INSTALL_K3S_SKIP_START=true
if [ -n "$PIBAKE_K3S_VERSION" ]; then
	export INSTALL_K3S_VERSION="$PIBAKE_K3S_VERSION"
else
	export INSTALL_K3S_CHANNEL="$PIBAKE_K3S_CHANNEL"
fi
eval "set -- $PIBAKE_K3S_ARGS"
log "running $script with INSTALL_K3S_EXEC=$INSTALL_K3S_EXEC $*"
retry 3 sh "$script" "$@" || fail "k3s install script"

service=k3s
[ "$PIBAKE_ROLE" = agent ] && service=k3s-agent
systemctl start --no-block "$service" || fail "systemctl start $service"
log "started $service"

date -u +%Y-%m-%dT%H:%M:%SZ >"$STATE/firstboot.done"
log "done"
sync

#!/bin/sh
# pibake first boot: the boot facts and the bootloader, apt, the memory
# cgroup check, k3s, then the optional packages. Run by pibake-firstboot.service until it has finished once.
#
# Each stage records its outcome (lib.sh: status) and, once done, a stamp in
# /var/lib/pibake/stages, so a later run skips it. What stops k3s: a missing
# memory cgroup (k3s cannot run; fixed only by the kernel command line and
# a reboot) and an install script that cannot be fetched or fails (retried
# here, then by systemd every minute). What never stops k3s: the clock, apt
# update, the login user's SSH keys and the optional packages (apt.upgrade,
# modules_extra, apt.packages), which are installed after k3s and retried
# by systemd without a reboot. Exit status: 0 finished, 1 retry later, 3
# give up until the next boot (systemd does not restart on 3).

ROOT=${PIBAKE_ROOT:-}
BOOT=${PIBAKE_BOOT:-$ROOT/boot/firmware}
PIBAKE_SCRIPT=firstboot
# shellcheck source=/dev/null
. "$ROOT/etc/pibake/node.env"
# shellcheck source=lib.sh
. "$ROOT/usr/local/lib/pibake/lib.sh"
# shellcheck source=bootfacts.sh
. "$ROOT/usr/local/lib/pibake/bootfacts.sh"

RETRY_DELAY=${PIBAKE_RETRY_DELAY:-5}
TIME_WAIT=${PIBAKE_TIME_WAIT:-120}
USER_WAIT=${PIBAKE_USER_WAIT:-300}
SERVER_WAIT=${PIBAKE_SERVER_WAIT:-1800}
K3S_WAIT=${PIBAKE_K3S_WAIT:-300}
REGISTER_WAIT=${PIBAKE_REGISTER_WAIT:-600}
POLL=${PIBAKE_POLL:-5}
BATCH_DELAY=${PIBAKE_BATCH_DELAY:-60}
PACKAGE_RUNS=${PIBAKE_PACKAGE_RUNS:-5}
STATE=$ROOT/var/lib/pibake
STAGES=$STATE/stages
LOG=$ROOT/var/log/pibake/firstboot.log

mkdir -p "$ROOT/var/log/pibake" "$STAGES"
exec >>"$LOG" 2>&1

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

done_stage() { now >"$STAGES/$1"; }
stage_done() { [ -f "$STAGES/$1" ]; }

# problem STAGE REASON records a failure that does not stop the first boot;
# the final status lists them.
problem() {
	status "$1" failed "$2"
	printf '%s: %s\n' "$1" "$2" >>"$STATE/problems"
}

# fail STAGE REASON records a failure that systemd retries (exit 1).
fail() {
	status "$1" failed "$2; retrying in a minute"
	exit 1
}

# apt commands wait for a dpkg lock held by another apt (apt-daily, an
# operator) instead of failing at once.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }

log "start: $PIBAKE_HOSTNAME ($PIBAKE_ROLE), build $PIBAKE_BUILD_ID"

# How the node booted, and the bootloader checked (or, with apply, its
# BOOT_ORDER staged for the next reboot): first, since it needs no network
# and a node that did not boot as planned should say so early.
bootloader_stage

# A Pi has no real-time clock: apt refuses signatures "from the future"
# until NTP has set the time. Wait for it, but not forever.
if ! stage_done clock; then
	waited=0
	while [ ! -e "$ROOT/run/systemd/timesync/synchronized" ] && [ "$waited" -lt "$TIME_WAIT" ]; do
		sleep 5
		waited=$((waited + 5))
	done
	if [ -e "$ROOT/run/systemd/timesync/synchronized" ]; then
		status clock ok "synchronised"
		done_stage clock
	else
		status clock waiting "not synchronised after ${TIME_WAIT}s; going on"
	fi
fi

# The login user, once the OS has renamed it from userconf.txt: its SSH
# keys, and a login shell (Raspberry Pi OS since 2026 ships its first user
# with /usr/sbin/nologin until a password is set).
if [ "$PIBAKE_USER_LOGIN" = 1 ] && ! stage_done user; then
	waited=0
	until home=$(getent passwd "$PIBAKE_USER" | cut -d: -f6) && [ -n "$home" ] && [ -d "$ROOT$home" ]; do
		if [ "$waited" -ge "$USER_WAIT" ]; then
			break
		fi
		sleep 5
		waited=$((waited + 5))
	done
	if [ -z "$home" ] || [ ! -d "$ROOT$home" ]; then
		status user waiting "user $PIBAKE_USER does not exist yet (userconf.txt not applied?); its keys stay in $STATE/authorized_keys"
	else
		if [ -f "$STATE/authorized_keys" ]; then
			mkdir -p "$ROOT$home/.ssh"
			cp "$STATE/authorized_keys" "$ROOT$home/.ssh/authorized_keys"
			chmod 700 "$ROOT$home/.ssh"
			chmod 600 "$ROOT$home/.ssh/authorized_keys"
			chown -R "$PIBAKE_USER:" "$ROOT$home/.ssh"
			log "authorized_keys installed for $PIBAKE_USER"
		fi
		shell=$(getent passwd "$PIBAKE_USER" | cut -d: -f7)
		case $shell in
		*/nologin | */false | "")
			usermod -s /bin/bash "$PIBAKE_USER" && log "login shell of $PIBAKE_USER set to /bin/bash (was ${shell:-none})"
			;;
		esac
		status user ok "$PIBAKE_USER"
		done_stage user
	fi
fi

export DEBIAN_FRONTEND=noninteractive
# An offline apt update does not stop k3s: k3s needs nothing from apt.
# apt-get update exits 0 when it cannot fetch (it only warns "Failed to
# fetch"); --error-on=any (apt >= 2.1.16) makes that a failure to retry.
if ! stage_done apt-update; then
	if retry 5 apt_get update --error-on=any; then
		status apt-update ok
		done_stage apt-update
	else
		problem apt-update "apt-get update failed; going on with the package lists on the image"
	fi
fi

# k3s dies at start with "failed to find memory cgroup (v2)" without it.
if ! stage_done cgroup; then
	controllers=$ROOT/sys/fs/cgroup/cgroup.controllers
	if [ -f "$controllers" ] && grep -qw memory "$controllers"; then
		status cgroup ok "memory controller present"
		done_stage cgroup
	else
		cmdline=$(cat "$ROOT/proc/cmdline" 2>/dev/null)
		status_final cgroup failed "the memory cgroup is not enabled, so k3s cannot run: $controllers lists '$(cat "$controllers" 2>/dev/null)'. The kernel command line was: $cmdline. Add cgroup_memory=1 cgroup_enable=memory to the end of cmdline.txt on the boot partition and reboot"
		exit 3
	fi
fi

if ! stage_done k3s; then
	# Joining nodes wait for the server's API, and agents wait for their
	# batch, so a fleet does not hit the server all at once.
	if [ -n "$PIBAKE_JOIN_URL" ]; then
		status server-wait running "$PIBAKE_JOIN_URL"
		waited=0
		delay=$RETRY_DELAY
		until curl -ksS --max-time 5 -o /dev/null "$PIBAKE_JOIN_URL/ping"; do
			if [ "$waited" -ge "$SERVER_WAIT" ]; then
				status server-wait waiting "server $PIBAKE_JOIN_URL still not answering after ${waited}s; installing anyway (k3s keeps retrying)"
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
		log "join batch $PIBAKE_JOIN_BATCH: waiting ${pause}s ($PIBAKE_JOIN_BATCH × ${BATCH_DELAY}s)"
		sleep "$pause"
	fi

	# install.sh does not read config.yaml to pick the role: pass it. Its
	# own start blocks until an agent has joined: skip it and start without
	# waiting.
	status k3s-install running
	if [ "$PIBAKE_AIRGAP" = 1 ]; then
		script=$ROOT/usr/local/lib/pibake/install.sh
		export INSTALL_K3S_SKIP_DOWNLOAD=true
	else
		script=$STATE/install.sh
		retry 5 curl -sSfL --max-time 60 -o "$script" "$PIBAKE_INSTALL_SCRIPT_URL" || fail k3s-install "could not download $PIBAKE_INSTALL_SCRIPT_URL"
	fi
	export INSTALL_K3S_EXEC="$PIBAKE_ROLE" INSTALL_K3S_SKIP_START=true
	if [ -n "$PIBAKE_K3S_VERSION" ]; then
		export INSTALL_K3S_VERSION="$PIBAKE_K3S_VERSION"
	else
		export INSTALL_K3S_CHANNEL="$PIBAKE_K3S_CHANNEL"
	fi
	eval "set -- $PIBAKE_K3S_ARGS"
	log "running $script with INSTALL_K3S_EXEC=$INSTALL_K3S_EXEC $*"
	retry 3 sh "$script" "$@" || fail k3s-install "the k3s install script failed"
	status k3s-install ok

	service=k3s
	[ "$PIBAKE_ROLE" = agent ] && service=k3s-agent
	systemctl start --no-block "$service" || fail k3s-start "systemctl start $service failed"
	status k3s-start ok "$service started"
	done_stage k3s
fi

# Whether k3s came up and the node joined (lib.sh: registered), for
# pibake watch; bounded, and never a failure: k3s keeps trying on its own,
# and with a report URL the reporter goes on checking (report.sh).
# k3s tells systemd it is ready (Type=notify): an agent whose server does
# not answer stays "activating".
if ! stage_done registered; then
	service=k3s
	[ "$PIBAKE_ROLE" = agent ] && service=k3s-agent
	waited=0
	until systemctl is-active --quiet "$service" || [ "$waited" -ge "$K3S_WAIT" ]; do
		sleep "$POLL"
		waited=$((waited + POLL))
	done
	if systemctl is-active --quiet "$service"; then
		status k3s-active ok "$service active"
		waited=0
		until registered || [ "$waited" -ge "$REGISTER_WAIT" ]; do
			sleep "$POLL"
			waited=$((waited + POLL))
		done
		if registered; then
			if [ "$PIBAKE_ROLE" = server ]; then
				status registered ok "the API answers and lists node $PIBAKE_HOSTNAME"
			else
				status registered ok "kubelet up, server $PIBAKE_JOIN_URL answering"
			fi
		else
			status registered waiting "not registered after ${REGISTER_WAIT}s; k3s keeps trying (journalctl -u $service)"
			echo "not registered" >"$STATE/unregistered"
		fi
	else
		status k3s-active waiting "$service is $(systemctl is-active "$service") after ${K3S_WAIT}s; k3s keeps trying (journalctl -u $service)"
		echo "not active" >"$STATE/unregistered"
	fi
	done_stage registered
fi

# Optional packages, after k3s: a mirror that is down or a misspelt
# package delays nothing else. A failure is retried by systemd a minute
# later, up to PACKAGE_RUNS runs; then it is recorded and left.
if ! stage_done packages; then
	runs=$(($(cat "$STATE/packages.runs" 2>/dev/null || echo 0) + 1))
	echo "$runs" >"$STATE/packages.runs"
	problem=
	if [ "$PIBAKE_APT_UPGRADE" = 1 ] && ! retry 3 apt_get -y -o Dpkg::Options::=--force-confold full-upgrade; then
		problem="apt-get full-upgrade failed"
	fi
	if [ "$PIBAKE_MODULES_EXTRA" = 1 ]; then
		# linux-modules-extra-raspi is Ubuntu's package; Raspberry Pi OS
		# builds vxlan into its kernel package and has no such package.
		if apt-cache show linux-modules-extra-raspi >/dev/null 2>&1; then
			retry 3 apt_get install -y linux-modules-extra-raspi || problem="${problem:+$problem; }installing linux-modules-extra-raspi failed"
		else
			log "linux-modules-extra-raspi is not available on this OS (it is Ubuntu's); skipped"
		fi
	fi
	if [ -n "$PIBAKE_APT_PACKAGES" ]; then
		# shellcheck disable=SC2086 # one word per package
		retry 3 apt_get install -y --no-install-recommends $PIBAKE_APT_PACKAGES || problem="${problem:+$problem; }installing $PIBAKE_APT_PACKAGES failed"
	fi
	if [ -z "$problem" ]; then
		status packages ok
		done_stage packages
	elif [ "$runs" -lt "$PACKAGE_RUNS" ]; then
		fail packages "$problem (run $runs of $PACKAGE_RUNS)"
	else
		problem packages "$problem; gave up after $runs runs (k3s is not affected)"
		done_stage packages
	fi
fi

summary="first boot finished"
if [ -s "$STATE/unregistered" ]; then
	summary="$summary; k3s $(cat "$STATE/unregistered") yet"
fi
if [ -s "$STATE/problems" ]; then
	summary="$summary, with problems: $(sort -u "$STATE/problems" | cut -d: -f1 | paste -sd, -)"
fi
# The done record is queued before the stamp: the reporter ends once the
# stamp is there and its queue is empty.
status "done" ok "$summary"
now >"$STATE/firstboot.done"
sync

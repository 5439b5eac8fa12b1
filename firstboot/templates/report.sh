#!/bin/sh
# pibake reporter: sends the first boot's status records, which lib.sh's
# status queues in /var/lib/pibake/reports, to the recipe's report URL
# (where `pibake watch` listens), oldest first, each signed with this
# node's key. Run by pibake-report.service beside the first boot, never in
# its way: the first boot only writes files, and a receiver that is slow,
# down or refusing only delays the reports (retried with backoff, at most
# 5 minutes apart, whatever the receiver answered). It ends once the first boot has finished and every
# record is sent, or the first boot stopped for good; records it still
# cannot send an hour after the first boot finished are dropped (the
# status record on the node and its card keeps them all). When the first
# boot ended with k3s not registered yet, it goes on checking, and
# reports the node registered when it is, or, an hour on, that it was not.
#
# One report: GET <url>/v1/nonce gives a single-use nonce; POST
# <url>/v1/report sends {"nonce":"…","status":<record>} with the header
# X-Pibake-Signature: sha256=<HMAC-SHA256 of the body under the node key>.

ROOT=${PIBAKE_ROOT:-}
PIBAKE_SCRIPT=report
# shellcheck source=/dev/null
. "$ROOT/etc/pibake/node.env"
# shellcheck source=lib.sh
. "$ROOT/usr/local/lib/pibake/lib.sh"

BOOT=${PIBAKE_BOOT:-$ROOT/boot/firmware}
STATE=$ROOT/var/lib/pibake
QUEUE=$STATE/reports
LOG=$ROOT/var/log/pibake/report.log
IDLE=${PIBAKE_REPORT_IDLE:-2}
MAX_DELAY=${PIBAKE_REPORT_MAX_DELAY:-300}
LINGER=${PIBAKE_REPORT_LINGER:-3600}
RECHECK=${PIBAKE_REPORT_RECHECK:-30}
URL=${PIBAKE_REPORT_URL%/}

mkdir -p "$ROOT/var/log/pibake"
exec >>"$LOG" 2>&1
[ -n "$URL" ] || exit 0
if ! key=$(cat "$ROOT/etc/pibake/report.key" 2>/dev/null) || [ -z "$key" ]; then
	log "no report key in /etc/pibake/report.key; not reporting"
	exit 0
fi

# pad_key KEYHEX PAD prints a printf format of the HMAC block-sized key
# XOR PAD (RFC 2104). It is all shell arithmetic and builtins, so the key
# never appears on a command line other users could read in /proc, and
# no tool beyond coreutils' sha256sum is needed.
pad_key() {
	p_k=$1
	p_out=
	p_i=0
	while [ "$p_i" -lt 64 ]; do
		p_b=0
		if [ -n "$p_k" ]; then
			p_rest=${p_k#??}
			p_b=$((0x${p_k%"$p_rest"}))
			p_k=$p_rest
		fi
		p_out="$p_out\\$(printf '%03o' $((p_b ^ $2)))"
		p_i=$((p_i + 1))
	done
	printf '%s' "$p_out"
}

# hex_format HEX prints a printf format for the bytes HEX spells.
hex_format() {
	h_x=$1
	h_out=
	while [ -n "$h_x" ]; do
		h_rest=${h_x#??}
		h_out="$h_out\\$(printf '%03o' $((0x${h_x%"$h_rest"})))"
		h_x=$h_rest
	done
	printf '%s' "$h_out"
}

# hmac_sha256 KEYHEX prints the hex HMAC-SHA256 of its standard input.
hmac_sha256() {
	# shellcheck disable=SC2059 # the formats are the key's bytes
	h_inner=$({
		printf "$(pad_key "$1" 54)"
		cat
	} | sha256sum | cut -c1-64)
	# shellcheck disable=SC2059
	{
		printf "$(pad_key "$1" 92)"
		printf "$(hex_format "$h_inner")"
	} | sha256sum | cut -c1-64
}

# send FILE reports one queued record and prints the HTTP status the
# receiver answered (000 when it could not be reached).
send() {
	nonce=$(curl -fsS --max-time 10 "$URL/v1/nonce") || {
		echo 000
		return
	}
	case $nonce in
	'' | *[!0-9a-f]*)
		log "$URL/v1/nonce answered something that is not a nonce"
		echo 000
		return
		;;
	esac
	body=$(printf '{"nonce":"%s","status":%s}' "$nonce" "$(cat "$1")")
	sig=$(printf '%s' "$body" | hmac_sha256 "$key")
	printf '%s' "$body" | curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
		-H "X-Pibake-Signature: sha256=$sig" --data-binary @- "$URL/v1/report" || true
}

# finished_for prints how many seconds ago the first boot finished, or
# nothing while it has not.
finished_for() {
	[ -f "$STATE/firstboot.done" ] || return 0
	echo $(($(date +%s) - $(date -r "$STATE/firstboot.done" +%s)))
}

# stop MESSAGE ends the reporter for good: it does not start again.
stop() {
	log "$1"
	now >"$STATE/report.done"
	exit 0
}

log "start: reporting to $URL"
delay=$IDLE
settled=0
checked=0
while :; do
	# The oldest queued record: the names sort in the order they were queued.
	set -- "$QUEUE"/[0-9]*.json
	next=$1
	if [ ! -f "$next" ]; then
		age=$(finished_for)
		# A first boot that ended with k3s not registered yet: k3s keeps
		# trying, so keep looking (every 30 s), and say so when it made it,
		# or, LINGER after the end, that it did not.
		if [ -n "$age" ] && [ -f "$STATE/unregistered" ]; then
			if [ $(($(date +%s) - checked)) -ge "$RECHECK" ]; then
				checked=$(date +%s)
				if registered; then
					rm -f "$STATE/unregistered"
					status registered ok "after the first boot had finished"
					continue
				fi
			fi
			if [ "$age" -ge "$LINGER" ]; then
				s_final=1
				status registered waiting "not registered within ${LINGER}s of the first boot's end; k3s keeps trying (kubectl get nodes)"
				s_final=
				rm -f "$STATE/unregistered"
				continue
			fi
			sleep "$IDLE"
			continue
		fi
		if [ -n "$age" ]; then
			stop "every report sent; the first boot has finished"
		fi
		if [ "$settled" = 1 ]; then
			log "every report sent; the first boot stopped until the next boot"
			exit 0
		fi
		sleep "$IDLE"
		continue
	fi
	code=$(send "$next")
	case $code in
	2??)
		settled=0
		grep -q '"final":true' "$next" && settled=1
		rm -f "$next"
		delay=$IDLE
		continue
		;;
	400 | 413)
		# This record will never be accepted: drop it, not the rest.
		log "$URL refused ${next##*/} for good (HTTP $code); dropped"
		rm -f "$next"
		continue
		;;
	esac
	# Anything else, 409 (the nonce expired, or the receiver restarted)
	# and 5xx included, is tried again with a new nonce after the backoff:
	# never at once, so a receiver under a flood is not also busy-looped
	# on by every node.
	age=$(finished_for)
	if [ -n "$age" ] && [ "$age" -ge "$LINGER" ]; then
		stop "gave up: $# records not reported to $URL within ${LINGER}s of the first boot's end (last answer: HTTP $code)"
	fi
	log "could not report ${next##*/} to $URL (HTTP $code); next try in ${delay}s"
	sleep "$delay"
	delay=$((delay * 2))
	[ "$delay" -le "$MAX_DELAY" ] || delay=$MAX_DELAY
done

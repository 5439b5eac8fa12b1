# shellcheck shell=sh
# pibake's shared shell functions, sourced by the activator and the
# first-boot script: logging and the node's status record. The caller sets
# ROOT, BOOT and LOG and has sourced node.env.

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

log() { printf '%s %s: %s\n' "$(now)" "$PIBAKE_SCRIPT" "$*"; }

# json_string prints $1 as a JSON string: backslash, quote and tab escaped,
# DEL and the C1 controls (U+0080-U+009F) escaped as \u00XX, other control
# characters and bytes that are not UTF-8 dropped, lines joined with \n.
# JSON allows DEL and C1 as they are, but `pibake watch` and `inspect`
# show these strings, and a terminal acts on them (U+009B is CSI).
json_string() {
	printf '%s' "$1" | LC_ALL=C tr -d '\000-\010\013-\037' | utf8_only |
		LC_ALL=C sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/	/\\t/g' -e "$j_c1" |
		awk 'BEGIN { printf "\"" } NR > 1 { printf "\\n" } { printf "%s", $0 } END { printf "\"" }'
}

# utf8_only copies its input without the bytes that are not UTF-8 (with
# glibc's iconv, which every Raspberry Pi OS has; as it is without one).
utf8_only() {
	if command -v iconv >/dev/null 2>&1; then
		iconv -c -f UTF-8 -t UTF-8 2>/dev/null
	else
		cat
	fi
}

# json_c1_script prints the sed script json_string escapes DEL and C1
# with: one substitution per character, matched as bytes (U+0080-U+009F
# are C2 80-C2 9F in UTF-8), its format built with shell arithmetic alone.
json_c1_script() {
	j_fmt='s/\177/\\\\u007f/g;'
	j_i=0
	while [ "$j_i" -lt 32 ]; do
		case $((j_i % 16)) in
		10) j_d=a ;; 11) j_d=b ;; 12) j_d=c ;; 13) j_d=d ;; 14) j_d=e ;; 15) j_d=f ;;
		*) j_d=$((j_i % 16)) ;;
		esac
		j_fmt="${j_fmt}s/\\302\\2$((j_i / 8))$((j_i % 8))/\\\\\\\\u00$((8 + j_i / 16))$j_d/g;"
		j_i=$((j_i + 1))
	done
	# shellcheck disable=SC2059 # the format holds the bytes to match
	printf "$j_fmt"
}

# Once, when this file is sourced: json_string runs in $(...) subshells,
# which could not keep it.
j_c1=$(json_c1_script)

# json_lines prints the last N lines of a file as a JSON array of strings.
json_lines() {
	printf '['
	if [ -f "$2" ]; then
		sep=
		tail -n "$1" "$2" | while IFS= read -r line; do
			printf '%s%s' "$sep" "$(json_string "$line")"
			sep=,
		done
	fi
	printf ']'
}

# status STAGE STATE [REASON] records where this node's first boot stands:
# /var/lib/pibake/status.json (the latest record) and status.log (one JSON
# line per change), in the root file system and, when it is mounted, on the
# boot partition, where `pibake inspect` reads them from a card put into any
# computer. STATE is running, ok, waiting or failed; a failed record
# carries the last lines of the log. With a report URL the record is also
# queued for report.sh, which sends it; recording never waits for the
# network. Recording never fails the caller: a full disk must not turn a
# status line into an error.
status() {
	s_log='[]'
	[ "$2" = failed ] && s_log=$(json_lines 12 "$LOG")
	s_boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
	s_extra=
	[ "${s_final:-}" = 1 ] && s_extra=',"final":true'
	# The boot facts (bootfacts.sh: one line of JSON), once gathered.
	[ -s "$ROOT/var/lib/pibake/facts.json" ] && s_extra="$s_extra,\"facts\":$(cat "$ROOT/var/lib/pibake/facts.json")"
	s_json=$(printf '{"version":1,"node":%s,"role":%s,"build":%s,"stage":%s,"state":%s,"time":%s,"boot":%s,"reason":%s,"log":%s%s}' \
		"$(json_string "$PIBAKE_HOSTNAME")" "$(json_string "$PIBAKE_ROLE")" "$(json_string "$PIBAKE_BUILD_ID")" \
		"$(json_string "$1")" "$(json_string "$2")" "$(json_string "$(now)")" "$(json_string "$s_boot")" \
		"$(json_string "${3:-}")" "$s_log" "$s_extra")
	for s_dir in "$ROOT/var/lib/pibake" "$BOOT/pibake"; do
		[ -d "$(dirname "$s_dir")" ] || continue
		{
			mkdir -p "$s_dir" &&
				printf '%s\n' "$s_json" >"$s_dir/status.json.tmp" &&
				mv -f "$s_dir/status.json.tmp" "$s_dir/status.json" &&
				printf '%s\n' "$s_json" >>"$s_dir/status.log" &&
				if [ "$(wc -l <"$s_dir/status.log")" -gt 200 ]; then
					tail -n 100 "$s_dir/status.log" >"$s_dir/status.log.tmp" && mv -f "$s_dir/status.log.tmp" "$s_dir/status.log"
				fi
		} 2>/dev/null || log "could not record status in $s_dir"
	done
	[ -z "${PIBAKE_REPORT_URL:-}" ] || queue_report "$s_json"
	log "status: $1 $2${3:+: $3}"
}

# status_final is status for a record after which nothing more happens
# without the operator (pibake watch stops waiting for the node).
status_final() {
	s_final=1
	status "$@"
	s_final=
}

# queue_next DIR prints the next record number: one past the counter, or,
# when a full disk left the counter empty, past every queued name, so the
# numbering never restarts under records still queued.
queue_next() {
	q_last=$(cat "$1/seq" 2>/dev/null)
	case $q_last in
	'' | *[!0-9]*) q_last=0 ;;
	*)
		echo $((q_last + 1))
		return
		;;
	esac
	for q_f in "$1"/[0-9]*.json; do
		[ -f "$q_f" ] || continue
		q_f=${q_f##*/}
		q_f=${q_f%.json}
		q_f=${q_f#"${q_f%%[1-9]*}"}
		[ "${q_f:-0}" -le "$q_last" ] || q_last=$q_f
	done
	echo $((q_last + 1))
}

# queue_report JSON queues one status record for report.sh in
# /var/lib/pibake/reports, numbered in order, keeping the newest 100.
queue_report() {
	q_dir=$ROOT/var/lib/pibake/reports
	{
		mkdir -p "$q_dir" &&
			q_n=$(queue_next "$q_dir") &&
			echo "$q_n" >"$q_dir/seq" &&
			printf '%s\n' "$1" >"$q_dir/tmp" &&
			mv -f "$q_dir/tmp" "$q_dir/$(printf %010d "$q_n").json"
	} 2>/dev/null || log "could not queue the report"
	# The newest 100 stay; the names sort in the order they were queued.
	set -- "$q_dir"/[0-9]*.json
	q_drop=$(($# - 100))
	while [ "$q_drop" -gt 0 ]; do
		rm -f "$1"
		shift
		q_drop=$((q_drop - 1))
	done
}

# registered: a server's API answers and lists this node (k3s kubectl
# reads the admin kubeconfig k3s writes); an agent's kubelet answers its
# health check, which k3s starts only once a server has given the agent
# its configuration, and the server still answers /ping.
registered() {
	if [ "$PIBAKE_ROLE" = server ]; then
		k3s kubectl get node "$PIBAKE_HOSTNAME" -o name >/dev/null 2>&1
	else
		[ "$(curl -sS --max-time 5 http://127.0.0.1:10248/healthz 2>/dev/null)" = ok ] &&
			[ "$(curl -ksS --max-time 5 "$PIBAKE_JOIN_URL/ping" 2>/dev/null)" = pong ]
	fi
}

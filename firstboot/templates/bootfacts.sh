# shellcheck shell=sh
# pibake's boot facts and bootloader stage, sourced by the first-boot
# script. The facts: the device and transport of the root file system (from
# sysfs), whether the memory cgroup is there, the board's model, and the
# bootloader's BOOT_ORDER and version. They go to $STATE/facts.json, which
# lib.sh's status puts into every later status record. The stage checks
# that BOOT_ORDER boots the recipe's boot device once the SD card is gone,
# and with bootloader { apply = true } stages the recipe's order with the
# OS's own rpi-eeprom-config --apply, for the next reboot; it never reboots.
# The caller sets ROOT, STATE and LOG, has sourced node.env and lib.sh,
# and defines stage_done, done_stage and problem.

# root_sysfs prints the sysfs directory of the root file system's block
# device: its major:minor from mountinfo (field 3; field 5 is the mount
# point; the last mount on / is the one in use), then /sys/dev/block's link
# to it, which the kernel writes as ../../devices/... (such as
# ../../devices/platform/axi/1000110000.pcie/.../nvme/nvme0/nvme0n1/nvme0n1p2).
root_sysfs() {
	bf_dev=$(awk '$5 == "/" { d = $3 } END { print d }' "$ROOT/proc/self/mountinfo" 2>/dev/null)
	[ -n "$bf_dev" ] || return 1
	bf_link=$(readlink "$ROOT/sys/dev/block/$bf_dev" 2>/dev/null) || return 1
	case $bf_link in
	../../devices/*) printf '%s\n' "$ROOT/sys/${bf_link#../../}" ;;
	*) return 1 ;;
	esac
}

# transport_of names the bus a block device's sysfs path goes through: an
# NVMe controller, a USB host (usb-storage or uas under it), an MMC host
# (SD card or eMMC), virtio (QEMU), ATA.
transport_of() {
	case $1 in
	*/nvme/*) echo nvme ;;
	*/usb[0-9]*/*) echo usb ;;
	*/mmc_host/*) echo mmc ;;
	*/virtio[0-9]*/*) echo virtio ;;
	*/ata[0-9]*/*) echo sata ;;
	*) echo unknown ;;
	esac
}

# usb_facts sets bf_usb_id (VID:PID, as lsusb shows it and
# usb-storage.quirks takes it) and bf_usb_driver (uas, or usb-storage when
# a quirk turned UAS off) of the USB disk whose sysfs path is $1: the
# interface directory is the last path element shaped bus-port:config.if.
usb_facts() {
	bf_if=$(printf '%s\n' "$1" | sed -n 's|^\(.*/[0-9][0-9]*-[0-9.]*:[0-9][0-9]*\.[0-9][0-9]*\)/.*$|\1|p')
	[ -n "$bf_if" ] || return 0
	bf_vid=$(cat "${bf_if%/*}/idVendor" 2>/dev/null)
	bf_pid=$(cat "${bf_if%/*}/idProduct" 2>/dev/null)
	[ -z "$bf_vid" ] || bf_usb_id=$bf_vid:$bf_pid
	bf_usb_driver=$(readlink "$bf_if/driver" 2>/dev/null) && bf_usb_driver=${bf_usb_driver##*/}
}

# one_line joins a tool's output into one line of at most 300 characters.
one_line() { tr '\n' ' ' | tr -s ' ' | sed 's/^ //; s/ $//' | cut -c1-300; }

# read_bootloader sets bl_config (the bootloader's configuration, as
# rpi-eeprom-config prints it), bl_problem (why it could not be read),
# bl_source and bl_version. rpi-eeprom-config reads the configuration from
# the firmware's blconfig memory, else from vcgencmd bootloader_config
# (raspberrypi/rpi-eeprom, rpi-eeprom-config: read_current_config).
read_bootloader() {
	bl_config='' bl_problem='' bl_source='' bl_version=''
	for bl_tool in rpi-eeprom-config "vcgencmd bootloader_config"; do
		command -v "${bl_tool%% *}" >/dev/null 2>&1 || continue
		bl_source=$bl_tool
		# The configuration is what it prints; its complaints (stderr)
		# only say why it failed.
		# shellcheck disable=SC2086 # the tool and its argument
		if ! bl_config=$($bl_tool 2>"$STATE/bootloader.err"); then
			bl_problem="$bl_tool failed: $({ printf '%s\n' "$bl_config" && cat "$STATE/bootloader.err"; } | one_line)"
			bl_config=''
		fi
		rm -f "$STATE/bootloader.err"
		break
	done
	[ -n "$bl_source" ] || bl_problem="neither rpi-eeprom-config nor vcgencmd is installed (packages rpi-eeprom, raspi-utils)"
	# The version: the device tree's build-timestamp (a 32-bit big-endian
	# number; what rpi-eeprom-update prefers), else vcgencmd
	# bootloader_version, whose first line is the build date.
	bl_ts=$ROOT/proc/device-tree/chosen/bootloader/build-timestamp
	if [ -f "$bl_ts" ]; then
		bl_n=$(od -An -v -t u1 "$bl_ts" | awk '{ for (i = 1; i <= NF; i++) v = v * 256 + $i } END { printf "%d", v }')
		bl_version="$(date -u -d "@$bl_n" '+%Y/%m/%d %H:%M:%S' 2>/dev/null) (timestamp $bl_n)"
	elif command -v vcgencmd >/dev/null 2>&1 && bl_v=$(vcgencmd bootloader_version 2>/dev/null); then
		bl_version="$(printf '%s\n' "$bl_v" | head -n 1) (timestamp $(printf '%s\n' "$bl_v" | awk '$1 == "timestamp" { print $2 }'))"
	fi
	return 0
}

# boot_order_of prints the BOOT_ORDER a bootloader configuration (on
# stdin) sets for every boot: the last one outside conditional sections,
# before a [config.txt] section, whose lines are config.txt's, not the
# bootloader's (eeprom-bootloader.adoc, "[config.txt] section").
boot_order_of() {
	awk 'BEGIN { all = 1 }
		{ sub(/\r$/, "") }
		/^\[config\.txt\]/ { exit }
		/^\[/ { all = ($0 ~ /^\[all\]/); next }
		all && /^BOOT_ORDER=/ { v = substr($0, 12) }
		END { print v }'
}

# with_setting KEY VALUE prints the configuration on stdin with KEY set to
# VALUE where it applies to every boot, or added as the first line (whose
# scope is every boot), every other line kept.
with_setting() {
	awk -v k="$1" -v v="$2" 'BEGIN { all = 1 }
		/^\[config\.txt\]/ { rest = 1 }
		!rest && /^\[/ { all = ($0 ~ /^\[all\]/) }
		!rest && all && index($0, k "=") == 1 { $0 = k "=" v; done = 1 }
		{ line[++n] = $0 }
		END { if (!done) print k "=" v; for (i = 1; i <= n; i++) print line[i] }'
}

# order_boots ORDER MODE: whether the bootloader, trying ORDER's modes
# from the lowest nibble up, reaches MODE before it stops (e), starts over
# (f) or waits for rpiboot (3) (eeprom-bootloader.adoc, "BOOT_ORDER fields").
order_boots() {
	ob=${1#0x}
	while [ -n "$ob" ]; do
		ob_mode=${ob#"${ob%?}"}
		ob=${ob%?}
		case $ob_mode in
		"$2") return 0 ;;
		[eEfF3]) return 1 ;;
		esac
	done
	return 1
}

# boot_facts gathers the facts into $STATE/facts.json, one line of JSON.
boot_facts() {
	bf_model=$(tr -d '\000' <"$ROOT/proc/device-tree/model" 2>/dev/null)
	bf_transport=unknown bf_root='' bf_usb_id='' bf_usb_driver='' bf_cgroup=false
	if bf_path=$(root_sysfs); then
		bf_root=${bf_path##*/}
		bf_transport=$(transport_of "$bf_path")
		[ "$bf_transport" != usb ] || usb_facts "$bf_path"
	fi
	grep -qw memory "$ROOT/sys/fs/cgroup/cgroup.controllers" 2>/dev/null && bf_cgroup=true
	read_bootloader
	bl_order=$(printf '%s\n' "$bl_config" | boot_order_of)
	bl_default=false
	if [ -n "$bl_config" ] && [ -z "$bl_order" ]; then
		bl_order=0xf41 # "default if BOOT_ORDER is empty" (eeprom-bootloader.adoc)
		bl_default=true
	fi
	bf_staged=$(cat "$STATE/boot-order.staged" 2>/dev/null)
	printf '{"model":%s,"root":%s,"transport":%s,"usb_id":%s,"usb_driver":%s,"memory_cgroup":%s,"boot_order":%s,"boot_order_default":%s,"boot_order_staged":%s,"bootloader_version":%s,"bootloader_source":%s,"bootloader_problem":%s}\n' \
		"$(json_string "$bf_model")" "$(json_string "$bf_root")" "$(json_string "$bf_transport")" \
		"$(json_string "$bf_usb_id")" "$(json_string "$bf_usb_driver")" "$bf_cgroup" \
		"$(json_string "$bl_order")" "$bl_default" "$(json_string "$bf_staged")" \
		"$(json_string "$bl_version")" "$(json_string "$bl_source")" "$(json_string "$bl_problem")" >"$STATE/facts.json.tmp" &&
		mv -f "$STATE/facts.json.tmp" "$STATE/facts.json"
	log "boot facts: root $bf_root on $bf_transport${bf_usb_id:+ ($bf_usb_id, $bf_usb_driver)}, memory cgroup $bf_cgroup, BOOT_ORDER ${bl_order:-unknown}${bl_problem:+ ($bl_problem)}"
}

# device_mode is the BOOT_ORDER mode that boots the recipe's boot device.
device_mode() {
	case $PIBAKE_BOOT_DEVICE in
	sd) echo 1 ;;
	usb) echo 4 ;;
	nvme) echo 6 ;;
	esac
}

# check_boot_order records whether the bootloader boots the recipe's boot
# device, or says why it could not tell.
check_boot_order() {
	bl_mode=$(device_mode)
	bl_root="root on $bf_transport${bf_root:+ ($bf_root)}"
	if [ -z "$bl_config" ]; then
		if [ -n "$bl_mode" ] || [ -n "$PIBAKE_BOOT_ORDER" ]; then
			status bootloader waiting "$bl_root; bootloader not read, BOOT_ORDER unchecked: $bl_problem"
		else
			status bootloader ok "$bl_root; bootloader not read: $bl_problem"
		fi
	elif [ -n "$bl_mode" ] && ! order_boots "$bl_order" "$bl_mode"; then
		problem bootloader "$bl_root; BOOT_ORDER $bl_order never tries $PIBAKE_BOOT_DEVICE (mode $bl_mode): once the SD card is gone the node will not boot. Set it with sudo rpi-eeprom-config --edit, or with bootloader { boot_order = ... apply = true } in the recipe"
	elif [ -n "$PIBAKE_BOOT_ORDER" ] && [ "$bl_order" != "$PIBAKE_BOOT_ORDER" ]; then
		status bootloader waiting "$bl_root; BOOT_ORDER is $bl_order, the recipe names $PIBAKE_BOOT_ORDER (apply = true would stage it)"
	else
		status bootloader ok "$bl_root; BOOT_ORDER $bl_order${bl_mode:+ boots $PIBAKE_BOOT_DEVICE}; bootloader ${bl_version:-version unknown}"
	fi
}

# apply_boot_order stages the recipe's BOOT_ORDER (and PCIE_PROBE=1 for a
# Pi 5 that boots NVMe) with rpi-eeprom-config --apply, which writes the
# whole configuration: the current one, with those settings changed. It
# takes effect at the next reboot (rpi-eeprom-update stages it on the boot
# partition, or writes the EEPROM for the next boot on a Pi 5).
apply_boot_order() {
	bl_root="root on $bf_transport${bf_root:+ ($bf_root)}"
	bl_probe=1
	[ "$PIBAKE_PCIE_PROBE" != 1 ] || printf '%s\n' "$bl_config" | grep -qx 'PCIE_PROBE=1' || bl_probe=0
	if [ -z "$bl_config" ]; then
		problem bootloader "$bl_root; BOOT_ORDER $PIBAKE_BOOT_ORDER not applied: the bootloader's configuration could not be read: $bl_problem"
	elif [ "$bl_order" = "$PIBAKE_BOOT_ORDER" ] && [ "$bl_probe" = 1 ]; then
		status bootloader ok "$bl_root; BOOT_ORDER is $PIBAKE_BOOT_ORDER already; nothing to apply"
	elif ! command -v rpi-eeprom-config >/dev/null 2>&1; then
		problem bootloader "$bl_root; BOOT_ORDER $PIBAKE_BOOT_ORDER not applied: rpi-eeprom-config is not installed (package rpi-eeprom)"
	else
		bl_conf=$STATE/bootconf.txt
		printf '%s\n' "$bl_config" | with_setting BOOT_ORDER "$PIBAKE_BOOT_ORDER" >"$bl_conf.tmp"
		if [ "$PIBAKE_PCIE_PROBE" = 1 ]; then
			with_setting PCIE_PROBE 1 <"$bl_conf.tmp" >"$bl_conf"
		else
			mv -f "$bl_conf.tmp" "$bl_conf"
		fi
		rm -f "$bl_conf.tmp"
		log "rpi-eeprom-config --apply $bl_conf:"
		if bl_out=$(rpi-eeprom-config --apply "$bl_conf" 2>&1); then
			printf '%s\n' "$bl_out"
			printf '%s\n' "$PIBAKE_BOOT_ORDER" >"$STATE/boot-order.staged"
			boot_facts
			status bootloader ok "$bl_root; BOOT_ORDER $PIBAKE_BOOT_ORDER staged with rpi-eeprom-config --apply (it was $bl_order); the bootloader uses it from the next reboot"
		else
			printf '%s\n' "$bl_out"
			problem bootloader "$bl_root; rpi-eeprom-config --apply failed, BOOT_ORDER stays $bl_order: $(apply_error "$bl_out")"
		fi
	fi
}

# apply_error picks what rpi-eeprom-config's output says went wrong: its
# ERROR lines (exit_error), else the last lines.
apply_error() {
	if printf '%s\n' "$1" | grep -q 'ERROR'; then
		printf '%s\n' "$1" | sed -n '/ERROR/,$p' | one_line
	else
		printf '%s\n' "$1" | tail -n 3 | one_line
	fi
}

# bootloader_stage gathers the facts on every run, and checks (or applies)
# BOOT_ORDER once: its stamp keeps a later run, or boot, from doing it
# again, so an apply never repeats.
bootloader_stage() {
	boot_facts
	stage_done bootloader && return 0
	if [ "$PIBAKE_BOOT_ORDER_APPLY" = 1 ]; then
		apply_boot_order
	else
		check_boot_order
	fi
	done_stage bootloader
}

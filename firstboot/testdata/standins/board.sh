# shellcheck shell=sh
# Shared by the stand-ins for rpi-eeprom-config and vcgencmd: the board
# they run on, read from the files the real tools read, under $PIBAKE_ROOT
# (the fake root of the behaviour tests; empty on a real system), and the
# bootloader EEPROM's state, kept in $EEPROM_STATE:
#   bootconf.txt  the configuration the running bootloader has (absent:
#                 the default of the board's current release)
#   pending       what --apply wrote for the next boot
#
# The board: rpi-eeprom-config's rpi4()/rpi5() look for "bcm2711" or
# "bcm2712" in /sys/firmware/devicetree/base/compatible;
# rpi-eeprom-update's checkDependencies reads the revision code from
# /sys/firmware/devicetree/base/system/linux,revision (new-style flag bit
# 23, processor bits 12-15: 3 is BCM2711, 4 is BCM2712; type bits 4-11: 20
# is CM4, 21 CM4S). raspberrypi/rpi-eeprom 86759b0.

root=${PIBAKE_ROOT:-}
dt=$root/sys/firmware/devicetree/base
state=${EEPROM_STATE:-/var/lib/eeprom-standin}

chip() {
	compatible=$(tr '\000' ' ' <"$dt/compatible" 2>/dev/null)
	case $compatible in
	*bcm2711*) echo 2711 ;;
	*bcm2712*) echo 2712 ;;
	esac
}

# board_type prints the revision code's type (17 is the Pi 4B, 23 the Pi
# 5, 20 the CM4), as rpi-eeprom-update computes it.
board_type() {
	rev=$(od -v -An -t x1 "$dt/system/linux,revision" 2>/dev/null | tr -d ' \n')
	[ -n "$rev" ] || return 1
	echo $(((0x$rev >> 4) & 0xff))
}

# default_config is the configuration each release's default image
# carries, read from firmware-2711/default/pieeprom-2026-05-17.bin and
# firmware-2712/default/pieeprom-2026-05-26.bin with rpi-eeprom-config
# (rpi-eeprom 86759b0). The Pi 4's sets no BOOT_ORDER: the bootloader then
# uses 0xf41 (eeprom-bootloader.adoc).
default_config() {
	case $(chip) in
	2711) printf '[all]\nBOOT_UART=0\nWAKE_ON_GPIO=1\nPOWER_OFF_ON_HALT=0\nNET_INSTALL_AT_POWER_ON=1\n' ;;
	2712) printf '[all]\nBOOT_UART=1\nBOOT_ORDER=0xf461\nNET_INSTALL_AT_POWER_ON=1\n' ;;
	esac
}

current_config() {
	if [ -f "$state/bootconf.txt" ]; then
		cat "$state/bootconf.txt"
	else
		default_config
	fi
}

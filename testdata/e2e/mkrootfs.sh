#!/bin/sh
# Builds the root file system of a bootable Raspberry Pi OS look-alike from
# Debian's arm64 packages, for the QEMU first-boot test (make e2e):
#
#   mkrootfs.sh bookworm|trixie|trixie-race DIR
#
# trixie-race is Trixie without the ordering of cloud-init after the boot
# partition's mount, on a card whose boot partition mounts late (as on a
# Pi 5 booting from NVMe, cloud-init#6614): cloud-init's local stage runs
# before /boot/firmware is mounted unless something orders it after.
#
# Output: DIR/rootfs (the tree), DIR/vmlinuz and DIR/initrd.img (kept
# outside the image, as the Pi's firmware keeps them on bootfs).
#
# Debian lacks the Raspberry Pi OS pieces that decide whether a first boot
# works, so the look-alike carries stand-ins for them, each written from
# what the real one does, failure modes included (sources in each file's
# header; none of their code is copied): the initramfs resize and disk-id
# change, Bookworm's init= first boot, userconf-pi's rename (which waits at
# a dialog forever when userconf.txt is missing or invalid), sshswitch,
# pi-gen's Wi-Fi-off NetworkManager state and rfkill files, and on Trixie
# rpi-resize on the systemd first boot plus Raspberry Pi's cloud-init
# settings around Debian's real cloud-init.
#
# Needs root, mmdebstrap, qemu-user-static and binfmt_misc. The bootstrap
# (slow: every package is configured under emulation) is kept as a tarball
# in $PIBAKE_E2E_CACHE keyed by release, package list and mirror; the rest
# runs whenever DIR is new (the caller keys DIR by this directory's files).
set -eu
FLAVOUR=$1
DIR=$2
RELEASE=${FLAVOUR%-race}
HERE=$(cd "$(dirname "$0")" && pwd)
STANDINS=$HERE/standins
MIRROR=${PIBAKE_E2E_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,udev,kmod,iproute2,openssh-server,sudo,curl,ca-certificates,linux-image-arm64,initramfs-tools,busybox,systemd-timesyncd,e2fsprogs,fdisk,network-manager,dbus,rfkill,iw
case $FLAVOUR in
bookworm) DISK_ID=5e3da9e3 ;;
trixie | trixie-race)
	DISK_ID=7c1b04d2
	PACKAGES=$PACKAGES,cloud-init,netplan.io
	;;
*)
	echo "mkrootfs.sh: flavour must be bookworm, trixie or trixie-race, not $FLAVOUR" >&2
	exit 2
	;;
esac

CACHE=${PIBAKE_E2E_CACHE:-$HOME/.cache/pibake-e2e}
mkdir -p "$DIR" "$CACHE"
ROOT=$DIR/rootfs
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true

# 1. Bootstrap, cached. update-initramfs is diverted to true while the
# packages are configured: step 3 builds the initramfs once, with the
# stand-ins in it.
KEY=$(printf 'mmdebstrap 2 %s %s %s\n' "$RELEASE" "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-16)
TAR=$CACHE/bootstrap-$RELEASE-$KEY.tar
if [ ! -f "$TAR" ]; then
	# shellcheck disable=SC2016 # $1 is the hook's own argument
	mmdebstrap --mode=root --format=tar --arch=arm64 --variant=apt --include="$PACKAGES" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
		"$RELEASE" "$TAR.tmp" "$MIRROR"
	mv "$TAR.tmp" "$TAR"
fi
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -C "$ROOT" --numeric-owner -xf "$TAR"
rm -f "$ROOT/usr/sbin/update-initramfs"
chroot "$ROOT" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
# Unsigned modules, before the initramfs copies any: under emulation the
# guest kernel's signature check can spin for the whole boot (see the
# script).
sh "$HERE/unsign-modules" "$ROOT/usr/lib/modules"

# 2. Laid out like Raspberry Pi OS (pi-gen stage1/stage2).
mkdir -p "$ROOT/boot/firmware"
cat >"$ROOT/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$DISK_ID-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$DISK_ID-02  /               ext4    defaults,noatime  0       1
FSTAB
echo raspberrypi >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\t\traspberrypi\n' >"$ROOT/etc/hosts"
# The test's package mirror, reached through QEMU's one forwarded port.
printf '192.168.1.2\tdeb.debian.org\n' >>"$ROOT/etc/hosts"
rm -f "$ROOT"/etc/apt/sources.list.d/* "$ROOT/etc/apt/sources.list"
echo 'deb [trusted=yes] http://deb.debian.org/e2e ./' >"$ROOT/etc/apt/sources.list"
# export-image/05-finalise: Bookworm ships an empty machine-id, Trixie
# "uninitialized" (systemd's first boot still to come).
if [ "$RELEASE" = trixie ]; then echo uninitialized >"$ROOT/etc/machine-id"; else : >"$ROOT/etc/machine-id"; fi
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*
# do_net_names 1: eth0 and wlan0, not predictable names.
mkdir -p "$ROOT/etc/systemd/network"
ln -sf /dev/null "$ROOT/etc/systemd/network/99-default.link"
# No real-time clock and no NTP server here: a stand-in says the clock is
# synchronised once the network is up, as timesyncd would on a real LAN.
install -m 644 "$STANDINS/e2e-ntp.service" "$ROOT/etc/systemd/system/"

# The first user, as pi-gen creates it: Bookworm with a usable shell and
# passwordless sudo from raspberrypi-sys-mods; Trixie (2026) with
# /usr/sbin/nologin and no sudo rule until someone sets a password.
if [ "$RELEASE" = trixie ]; then SHELL_OF_PI=/usr/sbin/nologin; else SHELL_OF_PI=/bin/bash; fi
GROUPS_OF_PI=$(for g in sudo adm dialout audio users video plugdev netdev; do
	chroot "$ROOT" getent group "$g" >/dev/null && printf '%s,' "$g"
done)
chroot "$ROOT" useradd -m -u 1000 -U -s "$SHELL_OF_PI" -G "${GROUPS_OF_PI%,}" pi
chroot "$ROOT" usermod -p '*' pi
if [ "$FLAVOUR" = bookworm ]; then
	echo 'pi ALL=(ALL) NOPASSWD: ALL' >"$ROOT/etc/sudoers.d/010_pi-nopasswd"
	chmod 440 "$ROOT/etc/sudoers.d/010_pi-nopasswd"
fi

# pi-gen stage2/02-net-tweaks without WPA_COUNTRY: Bluetooth unblocked,
# NetworkManager's radio switch off.
mkdir -p "$ROOT/var/lib/systemd/rfkill" "$ROOT/var/lib/NetworkManager"
for addr in 107d50c000.serial 3f215040.serial 20215040.serial fe215040.serial soc; do
	echo 0 >"$ROOT/var/lib/systemd/rfkill/platform-$addr:bluetooth"
done
printf '[main]\nWirelessEnabled=false\n' >"$ROOT/var/lib/NetworkManager/NetworkManager.state"

# The stand-ins.
mkdir -p "$ROOT/usr/lib/userconf-pi"
install -m 755 "$STANDINS/userconf-service" "$ROOT/usr/lib/userconf-pi/"
install -m 644 "$STANDINS/userconfig.service" "$ROOT/lib/systemd/system/"
if [ "$RELEASE" = trixie ]; then
	# Seen on a 2026 Trixie image (third-party read): it runs after
	# cloud-config.
	mkdir -p "$ROOT/etc/systemd/system/userconfig.service.d"
	printf '[Unit]\nAfter=cloud-config.service\n' >"$ROOT/etc/systemd/system/userconfig.service.d/trixie.conf"
fi
mkdir -p "$ROOT/usr/lib/raspberrypi-sys-mods"
install -m 755 "$STANDINS/sshswitch" "$ROOT/usr/lib/raspberrypi-sys-mods/"
install -m 644 "$STANDINS/sshswitch.service" "$ROOT/lib/systemd/system/"
install -m 755 "$STANDINS/regenerate_ssh_host_keys" "$ROOT/usr/lib/raspberrypi-sys-mods/"
install -m 644 "$STANDINS/regenerate_ssh_host_keys.service" "$ROOT/lib/systemd/system/"
install -m 755 "$STANDINS/e2e-halt" "$ROOT/usr/local/sbin/"
install -m 644 "$STANDINS/e2e-halt.service" "$STANDINS/e2e-firstboot-canary.service" "$ROOT/etc/systemd/system/"

# pi-gen export-image/01-user-rename: rename-user -f -s arms the rename.
mkdir -p "$ROOT/etc/ssh/sshd_config.d"
echo 'Banner /usr/share/userconf-pi/sshd_banner' >"$ROOT/etc/ssh/sshd_config.d/rename_user.conf"
chroot "$ROOT" systemctl --quiet disable getty@tty1
chroot "$ROOT" systemctl --quiet enable userconfig sshswitch e2e-ntp e2e-halt e2e-firstboot-canary
chroot "$ROOT" systemctl --quiet disable ssh
if [ "$FLAVOUR" = bookworm ]; then
	# The init= first boot; it also calls regenerate_ssh_host_keys, which
	# pi-gen bookworm enables and the script disables.
	install -m 755 "$STANDINS/firstboot" "$ROOT/usr/lib/raspberrypi-sys-mods/"
	chroot "$ROOT" systemctl --quiet enable regenerate_ssh_host_keys
else
	# "SSH generates the keys itself now" (pi-gen e2893c11): modelled by a
	# drop-in, since the mechanism is not in the sources read.
	mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
	printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' >"$ROOT/etc/systemd/system/ssh.service.d/keygen.conf"
	# rpi-resize on the systemd first boot (ConditionFirstBoot=yes).
	install -m 644 "$STANDINS/rpi-resize.service" "$ROOT/lib/systemd/system/"
	chroot "$ROOT" systemctl --quiet enable rpi-resize
	# Raspberry Pi's cloud-init settings (rpi-cloud-init-mods, formerly in
	# pi-gen stage2/04-cloud-init): NoCloud from /boot/firmware, no host key
	# changes, netplan rendered for NetworkManager.
	cat >"$ROOT/etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg" <<'CFG'
datasource_list: [ NoCloud, None ]
datasource:
  NoCloud:
    seedfrom: file:///boot/firmware
ssh:
  emit_keys_to_console: false
no_ssh_fingerprints: true
ssh_deletekeys: false
ssh_genkeytypes: []
CFG
	# Debian's cloud.cfg names its default user "debian"; Raspberry Pi OS's
	# is pi, which exists already.
	printf 'system_info:\n  default_user:\n    name: pi\n    lock_passwd: true\n' >"$ROOT/etc/cloud/cloud.cfg.d/98_e2e-default-user.cfg"
	mkdir -p "$ROOT/lib/netplan"
	printf 'network:\n  version: 2\n  renderer: NetworkManager\n' >"$ROOT/lib/netplan/00-network-manager-all.yaml"
	chmod 600 "$ROOT/lib/netplan/00-network-manager-all.yaml"
	if [ "$FLAVOUR" = trixie ]; then
		# The normal ordering: the boot partition is mounted before
		# cloud-init's local stage, as a downstream fix of cloud-init
		# #6614 would order it (sdm adds this drop-in, gitbls/sdm 7c91c63).
		for unit in cloud-init-local cloud-init-main; do
			mkdir -p "$ROOT/etc/systemd/system/$unit.service.d"
			printf '[Unit]\nRequiresMountsFor=/boot/firmware\n' >"$ROOT/etc/systemd/system/$unit.service.d/bootfs.conf"
		done
	else
		# The race, forced: cloud-init's units as Debian ships them (local
		# stage ordered after /var/lib/cloud's mount only), and a boot
		# partition that mounts only once cloud-init's local stage has
		# run, unless cloud-init waits for the mount.
		install -m 755 "$STANDINS/e2e-bootfs-late" "$ROOT/usr/local/sbin/"
		install -m 644 "$STANDINS/e2e-bootfs-late.service" "$ROOT/etc/systemd/system/"
		sed -i 's|^\(PARTUUID=[0-9a-f]*-01 *\)/boot/firmware *vfat *defaults |\1/boot/firmware  vfat    defaults,x-systemd.requires=e2e-bootfs-late.service |' "$ROOT/etc/fstab"
		grep -q 'x-systemd.requires=e2e-bootfs-late.service' "$ROOT/etc/fstab"
	fi
fi

# 3. The initramfs, once, with the stand-ins of the release's initramfs
# scripts and the virtio RNG that stands in for the Pi's /dev/hwrng.
install -m 755 "$STANDINS/initramfs-hook" "$ROOT/etc/initramfs-tools/hooks/pibake-e2e"
mkdir -p "$ROOT/etc/initramfs-tools/scripts/local-premount" "$ROOT/etc/initramfs-tools/scripts/local-bottom"
if [ "$FLAVOUR" = bookworm ]; then
	install -m 755 "$STANDINS/initramfs-firstboot" "$ROOT/etc/initramfs-tools/scripts/local-premount/firstboot"
else
	install -m 755 "$STANDINS/initramfs-resize_early" "$ROOT/etc/initramfs-tools/scripts/local-premount/resize_early"
	install -m 755 "$STANDINS/initramfs-set_partuuid" "$ROOT/etc/initramfs-tools/scripts/local-bottom/set_partuuid"
fi
# Only the modules the VM needs: building the initramfs runs under
# emulation, and MODULES=most makes that take minutes instead of seconds.
printf 'MODULES=list\nCOMPRESS=gzip\n' >"$ROOT/etc/initramfs-tools/conf.d/e2e.conf"
# xhci_pci, usb_storage and sd_mod: a node booted from a USB disk.
printf '%s\n' virtio_pci virtio_blk virtio_rng ext4 crc32c vfat nls_cp437 nls_ascii xhci_pci usb_storage sd_mod >>"$ROOT/etc/initramfs-tools/modules"
chroot "$ROOT" update-initramfs -c -k all
cp "$ROOT"/boot/vmlinuz-* "$DIR/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$DIR/initrd.img"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/*
touch "$DIR/rootfs.done"
echo "$DIR"

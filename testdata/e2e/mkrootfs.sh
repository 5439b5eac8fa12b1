#!/bin/sh
# Builds the root file system of a bootable Raspberry Pi OS look-alike from
# Debian's arm64 packages, for the QEMU first-boot test (make e2e). Output:
# DIR/rootfs (the tree), DIR/vmlinuz and DIR/initrd.img (kept outside the
# image, as the Pi's firmware keeps them on bootfs).
#
# Needs root, debootstrap, qemu-user-static and binfmt_misc. debootstrap's
# result (the slow part: the kernel's initramfs is built under emulation) is
# kept as a tarball in $PIBAKE_E2E_CACHE keyed by the package list; the rest
# runs every time DIR is new (the caller keys DIR by this file's content).
set -eu
DIR=$1
DISK_ID=${2:-5e3da9e3}
MIRROR=${PIBAKE_E2E_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,udev,kmod,ifupdown,iproute2,openssh-server,sudo,curl,ca-certificates,linux-image-arm64,initramfs-tools,systemd-timesyncd,e2fsprogs,dosfstools

CACHE=${PIBAKE_E2E_CACHE:-$HOME/.cache/pibake-e2e}
mkdir -p "$DIR" "$CACHE"
ROOT=$DIR/rootfs
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
KEY=$(printf 'bookworm %s %s\n' "$PACKAGES" "$MIRROR" | sha256sum | cut -c1-16)
TAR=$CACHE/debootstrap-$KEY.tar
if [ ! -f "$TAR" ]; then
	rm -rf "$TAR.d"
	debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" bookworm "$TAR.d" "$MIRROR"
	tar -C "$TAR.d" --numeric-owner -cf "$TAR.tmp" .
	mv "$TAR.tmp" "$TAR"
	rm -rf "$TAR.d"
fi
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -C "$ROOT" --numeric-owner -xf "$TAR"

# Laid out like Raspberry Pi OS: bootfs at /boot/firmware, PARTUUID root.
mkdir -p "$ROOT/boot/firmware"
cat >"$ROOT/etc/fstab" <<FSTAB
proc            /proc           proc    defaults          0       0
PARTUUID=$DISK_ID-01  /boot/firmware  vfat    defaults          0       2
PARTUUID=$DISK_ID-02  /               ext4    defaults,noatime  0       1
FSTAB
echo raspberrypi >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\t\traspberrypi\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/machine-id" # empty, as Bookworm images ship it
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT"/etc/ssh/ssh_host_*
printf 'auto lo\niface lo inet loopback\n' >"$ROOT/etc/network/interfaces"
# The user userconf.txt renames, as on Raspberry Pi OS.
chroot "$ROOT" sh -c 'id pi >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/bash pi'

# Stand-in for raspberrypi-sys-mods' first boot (PID 1 on the first power-on
# of a Bookworm image): remove its own init= argument, and quiet as the
# real one does when there is no splash, and reboot.
mkdir -p "$ROOT/usr/lib/raspberrypi-sys-mods"
cat >"$ROOT/usr/lib/raspberrypi-sys-mods/firstboot" <<'FIRSTBOOT'
#!/bin/sh
mount -t proc proc /proc
mount -o remount,rw /
mount /boot/firmware
sed -i 's| init=/usr/lib/raspberrypi-sys-mods/firstboot||; s| quiet||' /boot/firmware/cmdline.txt
echo "e2e: raspberrypi-sys-mods firstboot stand-in done, rebooting"
sync
umount /boot/firmware
mount -o remount,ro /
reboot -f
FIRSTBOOT
chmod 755 "$ROOT/usr/lib/raspberrypi-sys-mods/firstboot"

# Stand-in for userconf-pi's userconfig.service: rename the UID-1000 user
# as userconf.txt says, set its password hash, delete the file.
cat >"$ROOT/usr/local/sbin/userconfig" <<'USERCONF'
#!/bin/sh
f=/boot/firmware/userconf.txt
[ -f "$f" ] || exit 0
IFS=: read -r name hash <"$f"
old=$(getent passwd 1000 | cut -d: -f1)
if [ -n "$name" ] && [ "$old" != "$name" ]; then
	usermod -l "$name" -d "/home/$name" -m "$old"
	groupmod -n "$name" "$old"
fi
echo "$name:$hash" | chpasswd -e
rm -f "$f"
USERCONF
chmod 755 "$ROOT/usr/local/sbin/userconfig"
cat >"$ROOT/etc/systemd/system/userconfig.service" <<'UNIT'
[Unit]
Description=stand-in for userconf-pi: rename the default user from userconf.txt
ConditionPathExists=/boot/firmware/userconf.txt
After=local-fs.target
Before=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/userconfig

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/userconfig.service "$ROOT/etc/systemd/system/multi-user.target.wants/userconfig.service"

# The harness's own helper (not pibake's): power off once the node reached
# its final state, so the disk is read after a clean shutdown.
cp "$(dirname "$0")/e2e-halt.sh" "$ROOT/usr/local/sbin/e2e-halt"
chmod 755 "$ROOT/usr/local/sbin/e2e-halt"
cat >"$ROOT/etc/systemd/system/e2e-halt.service" <<'UNIT'
[Unit]
Description=e2e harness: power off when the node reached its final state
After=basic.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/e2e-halt

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/e2e-halt.service "$ROOT/etc/systemd/system/multi-user.target.wants/e2e-halt.service"

# Debian's initramfs (MODULES=most) already holds virtio_blk and ext4.
cp "$ROOT"/boot/vmlinuz-* "$DIR/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$DIR/initrd.img"
chroot "$ROOT" apt-get clean
echo "$DIR"

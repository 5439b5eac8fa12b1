#!/bin/sh
# e2e harness helper inside the look-alike image: powers the VM off when
# the node has reached its final state (the first-boot unit finished, or an
# agent has retried the unreachable server three times), or after 20
# minutes whatever happened.
LOG=/var/log/pibake/firstboot.log
i=0
while [ "$i" -lt 240 ]; do
	# A oneshot unit with RemainAfterExit stays "active (exited)" when done.
	if [ -e /var/lib/pibake/firstboot.done ] && [ "$(systemctl show -p SubState --value pibake-firstboot.service)" != start ]; then
		echo "e2e: first boot done, powering off" >/dev/console
		break
	fi
	if [ -f "$LOG" ] && [ "$(grep -c 'not answering yet' "$LOG")" -ge 3 ]; then
		echo "e2e: agent is waiting for its server, powering off" >/dev/console
		break
	fi
	if ! systemctl -q is-enabled pibake-firstboot.service 2>/dev/null && [ "$i" -ge 24 ]; then
		echo "e2e: no pibake unit on this boot, powering off" >/dev/console
		break
	fi
	i=$((i + 1))
	sleep 5
done
# When the units ran, for the harness to check their order.
systemctl show -p ActiveEnterTimestampMonotonic network-online.target >/var/log/e2e-units.txt
systemctl show -p InactiveExitTimestampMonotonic -p Result pibake-firstboot.service >>/var/log/e2e-units.txt
sync
systemctl poweroff

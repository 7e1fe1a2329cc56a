#!/bin/busybox sh
# /init of the L2 probe guest (PID 1 inside a VM that `wisp` runs inside L1).
#
# Signals the boot timer, prints what the tests check as "WISP-L2 key=value" lines (one word
# per value), then ends the VM the way the kernel command line asks:
#   wisp_l2=reboot   (default) `reboot -f`: with `reboot=k` Linux resets through the i8042.
#   wisp_l2=poweroff `poweroff -f`: Linux enters ACPI S5 through wisp's PM1 control register
#                    (with `acpi=off` it halts instead, which only wisp's legacy console watch
#                    notices).
#   wisp_l2=exit     init exits: the kernel panics ("Attempted to kill init"), tells pvpanic;
#                    with panic=-1 it then resets at once.
#   wisp_l2=banners  a guest process prints Linux's power-down line and panic banner to the
#                    console; the guest must keep running: it says so, then reboots.
# Every console byte is a nested exit under TCG, so this stays short.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The boot timer (Firecracker's convention, vmm/src/layout.rs BOOT_TIMER_START): the byte 123 at
# 0xd0000000 marks "init reached".
devmem 0xd0000000 8 123 2>/dev/null || echo "WISP-L2 boot-timer-write-failed"
busybox mount -t sysfs sysfs /sys
echo "WISP-L2 init"
echo "WISP-L2 nproc=$(nproc)"
echo "WISP-L2 meminfo-total-kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "WISP-L2 free-total-mib=$(free -m | awk '/^Mem:/ {print $2}')"
# From "Memory: AVAILABLEK/TOTALK available (...)": TOTAL is the RAM the firmware map (e820)
# gave the kernel, AVAILABLE what was left after early reservations.
echo "WISP-L2 dmesg-memory=$(dmesg | sed -n 's|.*Memory: \([0-9]*K/[0-9]*K\) .*|\1|p' | head -n 1)"
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        wisp_l2=*) mode=${arg#wisp_l2=} ;;
    esac
done
echo "WISP-L2 end mode=${mode:-reboot}"
case "${mode:-reboot}" in
    exit) exit 1 ;;
    poweroff) poweroff -f ;;
    banners)
        sh -c 'echo "reboot: Power down" > /dev/console'
        sh -c 'echo "Kernel panic - not syncing: printed by a guest process" > /dev/console'
        sleep 1
        echo "WISP-L2 alive-after-banners"
        reboot -f ;;
    *) reboot -f ;;
esac
sleep 5
echo "WISP-L2 still-running"

#!/bin/busybox sh
# /init of the L2 guest of tests/linux_api.rs (Tinyx kernel with keyboard.config).
#
# Reports the first 16 bytes of its disk (/dev/vda) whenever they change, read with O_DIRECT so
# a host-side swap of the backing file (PATCH /drives) shows; waits for the kernel's i8042/atkbd
# drivers to register the keyboard, says so, and then waits for good: only the host's
# Ctrl-Alt-Del ends this guest. This script is PID 1 and never calls
# reboot(RB_DISABLE_CAD), so the kernel acts on the chord itself (kernel_restart, then the
# i8042 reset that `reboot=k` asks for, which ends wisp).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

(
    last=""
    while :; do
        now=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 16)
        if [ "$now" != "$last" ]; then
            echo "WISP-L2 disk=$now"
            last=$now
        fi
        sleep 0.2
    done
) &

i=0
keyboard=""
while [ $i -lt 300 ]; do
    keyboard=$(grep '^N: Name=' /proc/bus/input/devices 2>/dev/null | head -n 1)
    [ -n "$keyboard" ] && break
    sleep 0.1
    i=$((i + 1))
done
name=$(echo "${keyboard#N: Name=}" | tr -d '"' | tr ' ' '_')
echo "WISP-L2 keyboard=${name:-none}"
echo "WISP-L2 ready"
while :; do
    sleep 1
done

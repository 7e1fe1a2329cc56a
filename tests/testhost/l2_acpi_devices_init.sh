#!/bin/busybox sh
# /init of the L2 guest of tests/linux_acpi_devices.rs: counts the virtio devices Linux found,
# reads the first bytes of every virtio-blk disk and some entropy from virtio-rng, and shows
# how each device's interrupt is wired. Facts are "WISP-L2 key=value" lines (one word per
# value), then `reboot -f` (with reboot=k, a reset through the i8042, which ends wisp
# cleanly). Every console byte is a nested exit under TCG, so this stays short.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t sysfs sysfs /sys
echo "WISP-L2 cmdline-virtio=$(grep -o 'virtio_mmio.device=' /proc/cmdline | wc -l)"
echo "WISP-L2 acpi-virtio=$(ls /sys/bus/acpi/devices 2>/dev/null | grep -c '^LNRO0005:')"
echo "WISP-L2 virtio-devices=$(ls /sys/bus/virtio/devices | wc -l)"
echo "WISP-L2 probe-failures=$(dmesg | grep -c 'probe.*failed')"
for dev in /sys/block/vd*; do
    name=${dev##*/}
    # The disk's marker: its first line (the image is the marker, then zeros).
    echo "WISP-L2 $name=$(head -c 64 "/dev/$name" | tr -d '\000' | head -n 1)"
done
echo "WISP-L2 rng-current=$(cat /sys/class/misc/hw_random/rng_current)"
echo "WISP-L2 rng-bytes=$(head -c 32 /dev/hwrng | wc -c)"
# "NN: COUNT... IO-APIC NN-edge virtioK": which GSI and trigger each device got, and whether
# it ever interrupted (one CPU: one count column).
grep virtio /proc/interrupts | while read -r irq count chip pin dev; do
    echo "WISP-L2 irq-$dev=$pin:$count"
done
echo "WISP-L2 end"
reboot -f
sleep 5
echo "WISP-L2 still-running"

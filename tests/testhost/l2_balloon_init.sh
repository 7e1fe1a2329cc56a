#!/bin/busybox sh
# /init of the L2 guest of tests/linux_balloon.rs (Tinyx with balloon.config).
#
# Reports whether the virtio_balloon driver bound, then writes and deletes a file that fills
# most of its free memory on a tmpfs: the freed pages are resident on the host, so the pages
# the balloon takes from them show in the VMM's RSS. Prints `WISP-L2 ready` and waits. When
# its free memory falls below 24 MiB (the host inflated the balloon over most of it) it
# writes 48 MiB more: more than it has, which only deflate-on-OOM can give it. With
# `wisp_balloon=idle` on the kernel command line it only idles after `ready` (density runs).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /fill
mount -t tmpfs -o size=200m tmpfs /fill

kib() { grep "^$1:" /proc/meminfo | tr -s ' ' | cut -d' ' -f2; }

bound=$(ls /sys/bus/virtio/drivers/virtio_balloon 2>/dev/null | grep -c '^virtio')
echo "WISP-L2 balloon-bound=$bound"
fill=$(( $(kib MemFree) / 1024 - 24 ))
dd if=/dev/zero of=/fill/touch bs=1M count=$fill 2>/dev/null
rm /fill/touch
echo "WISP-L2 touched-mib=$fill memfree-kib=$(kib MemFree)"
echo "WISP-L2 ready"

[ "$wisp_balloon" = idle ] && while :; do sleep 10; done
while [ "$(kib MemFree)" -ge 24576 ]; do
    sleep 0.2
done
echo "WISP-L2 oom-phase memfree-kib=$(kib MemFree)"
dd if=/dev/zero of=/fill/need bs=1M count=48 2>/dev/null
echo "WISP-L2 oom-alloc rc=$? written-kib=$(du -k /fill/need | cut -f1) memfree-kib=$(kib MemFree)"
while :; do
    sleep 10
done

#!/bin/busybox sh
# /init of the L2 guest of tests/linux_snapshot.rs: a shell loop that prints a tick, the
# guest's uptime and its wall clock once a second, forever. Snapshotted and restored in a new
# `wisp` process, it must go on from the tick after its last one, with its clock moving on.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "WISP-L2 nproc=$(nproc)"
i=0
while :; do
    i=$((i + 1))
    echo "WISP-L2 tick=$i uptime=$(cut -d' ' -f1 /proc/uptime) cpus=$(grep -c ^processor /proc/cpuinfo)"
    sleep 1
done

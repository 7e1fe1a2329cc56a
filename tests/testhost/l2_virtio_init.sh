#!/bin/busybox sh
# /init of the L2 guest of tests/linux_virtio.rs: drives wisp's virtio devices from Linux.
#
# The kernel command line picks the scenario and carries its data:
#   wisp_virtio=block-write  mount /dev/vda (ext4), print from-host.txt, write wisp_marker=M
#                            to from-guest.txt, sync, unmount.
#   wisp_virtio=block-read   mount /dev/vda read-only, print from-guest.txt, try a raw write
#                            to the (read-only) device.
#   wisp_virtio=net          configure eth0 as 10.0.2.15/24 and ping the L1 end of the tap.
#   wisp_virtio=root         the ext4 disk is the root filesystem: write wisp_marker=M to
#                            /from-guest.txt there.
#   wisp_virtio=vsock        exchange a line each way with L1 over vsock, in both directions
#                            of connection (vsock-probe, tests/testhost/vsock_probe.rs).
# Facts are "WISP-L2 key=value" lines (one word per value), then `reboot -f` (with reboot=k,
# a reset through the i8042, which ends wisp cleanly). Every console byte is a nested exit
# under TCG, so this stays short.
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t sysfs sysfs /sys
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        wisp_virtio=*) scenario=${arg#wisp_virtio=} ;;
        wisp_marker=*) marker=${arg#wisp_marker=} ;;
    esac
done
echo "WISP-L2 init scenario=$scenario"
mkdir -p /mnt
case "$scenario" in
    block-write)
        if mount -t ext4 /dev/vda /mnt; then
            echo "WISP-L2 host-file=$(cat /mnt/from-host.txt)"
            echo "$marker" > /mnt/from-guest.txt
            sync
            umount /mnt && echo "WISP-L2 umount=ok"
        else
            echo "WISP-L2 mount=failed"
        fi
        ;;
    block-read)
        echo "WISP-L2 sysfs-ro=$(cat /sys/block/vda/ro)"
        echo "WISP-L2 serial=$(cat /sys/block/vda/serial 2>/dev/null)"
        if mount -t ext4 -o ro /dev/vda /mnt; then
            echo "WISP-L2 guest-file=$(cat /mnt/from-guest.txt)"
            umount /mnt
        else
            echo "WISP-L2 mount=failed"
        fi
        # A read-only virtio-blk disk (VIRTIO_BLK_F_RO) must refuse writes at the block layer.
        if echo overwrite | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync 2>/dev/null; then
            echo "WISP-L2 raw-write=accepted"
        else
            echo "WISP-L2 raw-write=refused"
        fi
        ;;
    net)
        ip link set lo up
        ip addr add 10.0.2.15/24 dev eth0
        ip link set eth0 up
        echo "WISP-L2 mac=$(cat /sys/class/net/eth0/address)"
        ping -c 3 -W 5 10.0.2.1 > /tmp/ping.txt 2>&1
        rc=$?
        grep -E 'transmitted|round-trip|bad|unreachable' /tmp/ping.txt
        echo "WISP-L2 ping-rc=$rc"
        ;;
    root)
        # Booted with the ext4 disk as its root (`root=/dev/vda rw`, this script as init=/init):
        # write to the root filesystem itself, then make it clean for the host to read.
        echo "WISP-L2 root-fs=$(awk '$2 == "/" {print $3}' /proc/mounts)"
        echo "WISP-L2 root-mode=$(awk '$2 == "/" {print substr($4, 1, 2)}' /proc/mounts)"
        echo "$marker" > /from-guest.txt
        sync
        mount -o remount,ro / && echo "WISP-L2 remount-ro=ok"
        ;;
    vsock)
        # Guest-initiated (to the L1 listener on <uds>_5000), then host-initiated (L1 retries
        # CONNECT 6000 on <uds> until this listener is up).
        timeout 30 vsock-probe connect 2 5000 from-guest
        echo "WISP-L2 connect-rc=$?"
        timeout 60 vsock-probe listen 6000
        echo "WISP-L2 listen-rc=$?"
        ;;
    *)
        echo "WISP-L2 unknown-scenario"
        ;;
esac
echo "WISP-L2 end"
reboot -f
sleep 5
echo "WISP-L2 still-running"

#!/bin/busybox sh
# /init of the L1 test host (runs as PID 1 inside QEMU/TCG).
#
# Loads KVM, runs /testhost/script.sh, then powers the machine off. Lines starting with
# "### TESTHOST" are read by tests/testhost/console.rs; keep them in step.
export PATH=/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# SeaBIOS leaves the cursor mid-line; start the markers on a fresh one.
echo
echo "### TESTHOST init uptime=$(uptime_s)"
while read -r module; do
    insmod "/lib/modules/$module" || echo "### TESTHOST insmod-failed $module"
done < /lib/modules/order
if [ -c /dev/kvm ]; then
    echo "### TESTHOST kvm-ready uptime=$(uptime_s)"
else
    echo "### TESTHOST kvm-missing uptime=$(uptime_s)"
    dmesg | grep -i -e kvm -e svm | tail -n 20
fi

# A subshell, so an `exit` in the script cannot end PID 1 (which would panic L1).
( cd /testhost && . /testhost/lib.sh && . /testhost/script.sh )
echo "### TESTHOST script-exit rc=$?"
echo "### TESTHOST done uptime=$(uptime_s)"
poweroff -f

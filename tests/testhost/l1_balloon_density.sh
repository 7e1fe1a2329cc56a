# The density measurement of tests/linux_balloon.rs (ignored by default), run inside L1 as
# `sh /tmp/density.sh CMDLINE GUESTS MEM_MIB INFLATE_MIB`.
#
# Starts GUESTS `wisp --api-sock S --config-file F` VMMs at once, each a Tinyx guest of
# MEM_MIB with a balloon (l2_balloon_init.sh with wisp_balloon=idle: it touches most of its
# free memory once, frees it and idles), waits until every guest is ready, and prints the
# host memory they take (the sum of the VMMs' RSS and L1's MemTotal - MemAvailable); then
# inflates every balloon by INFLATE_MIB, waits until each guest reports it, and prints the
# same figures again as `DENSITY key=value` lines.
CMDLINE=$1
GUESTS=$2
MEM=$3
INFLATE=$4

kib() { grep "^$1:" /proc/meminfo | tr -s ' ' | cut -d' ' -f2; }
used_kib() { echo $(( $(kib MemTotal) - $(kib MemAvailable) )); }
rss_sum_kib() {
    sum=0
    for pid in $PIDS; do
        r=$(grep '^VmRSS:' /proc/$pid/status | tr -s ' ' | cut -d' ' -f2)
        sum=$((sum + ${r:-0}))
    done
    echo $sum
}

echo "DENSITY guests=$GUESTS mem-mib=$MEM inflate-mib=$INFLATE"
echo "DENSITY l1-used-idle-kib=$(used_kib)"
PIDS=""
i=0
while [ $i -lt "$GUESTS" ]; do
    cat > /tmp/d$i.json <<JSON
{"boot-source":{"kernel_image_path":"/guest/vmlinux","initrd_path":"/guest/balloon.cpio","boot_args":"$CMDLINE wisp_balloon=idle"},
 "machine-config":{"vcpu_count":1,"mem_size_mib":$MEM},
 "balloon":{"amount_mib":0,"deflate_on_oom":false,"stats_polling_interval_s":0}}
JSON
    wisp --api-sock /tmp/d$i.sock --config-file /tmp/d$i.json > /tmp/d$i.out 2> /tmp/d$i.err < /dev/null &
    PIDS="$PIDS $!"
    i=$((i + 1))
done

# Every guest ready, or give up after 20 minutes.
t=0
while [ $t -lt 1200 ]; do
    ready=$(grep -l "WISP-L2 ready" /tmp/d*.out 2>/dev/null | wc -l)
    [ "$ready" -ge "$GUESTS" ] && break
    sleep 1
    t=$((t + 1))
done
echo "DENSITY ready=$ready after-s=$t"
sleep 5
echo "DENSITY rss-sum-before-kib=$(rss_sum_kib)"
echo "DENSITY l1-used-before-kib=$(used_kib)"

i=0
while [ $i -lt "$GUESTS" ]; do
    /usr/bin/curl -sS --unix-socket /tmp/d$i.sock -X PATCH -H 'Content-Type: application/json' \
        -d "{\"amount_mib\":$INFLATE}" "http://localhost/balloon"
    i=$((i + 1))
done
# Each balloon at its target (actual_mib in GET /balloon/statistics), or 10 minutes.
t=0
while [ $t -lt 600 ]; do
    done_=0
    i=0
    while [ $i -lt "$GUESTS" ]; do
        /usr/bin/curl -sS --unix-socket /tmp/d$i.sock "http://localhost/balloon/statistics" \
            | grep -Eq "\"actual_mib\":$INFLATE[,}]" && done_=$((done_ + 1))
        i=$((i + 1))
    done
    [ $done_ -ge "$GUESTS" ] && break
    sleep 1
    t=$((t + 1))
done
echo "DENSITY inflated=$done_ after-s=$t"
sleep 3
echo "DENSITY rss-sum-after-kib=$(rss_sum_kib)"
echo "DENSITY l1-used-after-kib=$(used_kib)"
for pid in $PIDS; do
    kill $pid
done
wait
echo "--- first guest's console"
cat /tmp/d0.out
echo "--- first VMM's stderr"
cat /tmp/d0.err

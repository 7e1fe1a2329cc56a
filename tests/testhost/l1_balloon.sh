# The balloon scenario of tests/linux_balloon.rs, run inside L1 as `sh /tmp/balloon.sh CMDLINE`.
#
# Starts `wisp --api-sock`, gives the guest (128 MiB, l2_balloon_init.sh) a balloon with
# deflate_on_oom and 1 s statistics, boots it, then: inflates by 64 MiB and reads the VMM's
# RSS before and after, deflates, and finally inflates over all but 12 MiB of the guest's free
# memory so that its next 48 MiB write can only succeed by deflating on OOM. Prints
# `BALLOON step=NAME http=STATUS body=JSON` per request, `BALLOON key=value` figures and
# `BALLOON event ...` lines, then the guest's console and wisp's stderr.
CMDLINE=$1
SOCK=/tmp/balloon.sock
GUEST_OUT=/tmp/balloon-guest.out
WISP_ERR=/tmp/balloon-wisp.err

# api STEP METHOD PATH [BODY]; the body is also left in $body.
api() {
    if [ -n "$4" ]; then
        out=$(/usr/bin/curl -sS --unix-socket $SOCK -X "$2" -H 'Content-Type: application/json' \
            -d "$4" -w '\n%{http_code}' "http://localhost$3" 2>&1)
    else
        out=$(/usr/bin/curl -sS --unix-socket $SOCK -X "$2" -w '\n%{http_code}' \
            "http://localhost$3" 2>&1)
    fi
    code=$(echo "$out" | tail -n 1)
    body=$(echo "$out" | sed '$d' | tr -d '\n ')
    echo "BALLOON step=$1 http=$code body=$body"
}

# field NAME: an integer field of the JSON in $body.
field() { echo "$body" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

# wait_for FILE TEXT TENTHS_OF_A_SECOND
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        [ $i -ge "$3" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# wait_actual STEP MIB: polls GET /balloon/statistics (quietly) until actual_mib is MIB.
wait_actual() {
    i=0
    while [ $i -lt 600 ]; do
        out=$(/usr/bin/curl -sS --unix-socket $SOCK "http://localhost/balloon/statistics")
        body=$(echo "$out" | tr -d '\n ')
        [ "$(field actual_mib)" = "$2" ] && break
        sleep 0.1
        i=$((i + 1))
    done
    echo "BALLOON step=$1 http=200 body=$body"
}

rss_kib() { grep '^VmRSS:' /proc/$WISP/status | tr -s ' ' | cut -d' ' -f2; }

wisp --api-sock $SOCK > $GUEST_OUT 2> $WISP_ERR < /dev/null &
WISP=$!
i=0
while [ ! -S $SOCK ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done

api boot-source PUT /boot-source \
    "{\"kernel_image_path\":\"/guest/vmlinux\",\"initrd_path\":\"/guest/balloon.cpio\",\"boot_args\":\"$CMDLINE\"}"
api machine-config PUT /machine-config '{"vcpu_count":1,"mem_size_mib":128}'
api balloon PUT /balloon '{"amount_mib":0,"deflate_on_oom":true,"stats_polling_interval_s":1}'
api start PUT /actions '{"action_type":"InstanceStart"}'
if wait_for $GUEST_OUT "WISP-L2 ready" 1500; then
    echo "BALLOON event guest-ready"
else
    echo "BALLOON event guest-not-ready"
fi
sleep 2
echo "BALLOON rss-before-kib=$(rss_kib)"
api stats-before GET /balloon/statistics
api inflate PATCH /balloon '{"amount_mib":64}'
wait_actual stats-inflated 64
# Statistics come every second; under TCG give the guest a few.
sleep 3
echo "BALLOON rss-inflated-kib=$(rss_kib)"
api stats-inflated-later GET /balloon/statistics
api deflate PATCH /balloon '{"amount_mib":0}'
wait_actual stats-deflated 0
sleep 3
api stats-deflated-later GET /balloon/statistics
echo "BALLOON rss-deflated-kib=$(rss_kib)"
free_bytes=$(field free_memory)
free_mib=$(( ${free_bytes:-0} / 1048576 ))
target=$((free_mib - 12))
echo "BALLOON oom-target-mib=$target"
api oom-inflate PATCH /balloon "{\"amount_mib\":$target}"
if wait_for $GUEST_OUT "WISP-L2 oom-alloc" 1800; then
    echo "BALLOON event oom-alloc-done"
else
    echo "BALLOON event oom-alloc-not-done"
fi
sleep 3
api stats-oom GET /balloon/statistics
api balloon-config GET /balloon
kill $WISP
wait $WISP
echo "--- guest console"
cat $GUEST_OUT
echo "--- wisp stderr"
cat $WISP_ERR

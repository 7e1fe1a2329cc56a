# The REST API scenario of tests/linux_api.rs, run inside L1 as `sh /testhost/api.sh CMDLINE`.
#
# Starts `wisp --api-sock`, configures and starts a Linux guest with curl over the Unix socket,
# swaps its disk's backing file (PATCH /drives), pauses and resumes it, sends Ctrl-Alt-Del and
# waits for wisp to end. Prints one
# `API step=NAME http=STATUS body=JSON` line per request and `API event ...` lines, then the
# guest's console.
CMDLINE=$1
SOCK=/tmp/wisp-api.sock
GUEST_OUT=/tmp/api-guest.out
WISP_ERR=/tmp/api-wisp.err

up() { cut -d' ' -f1 /proc/uptime; }

# api STEP METHOD PATH [BODY]
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
    echo "API step=$1 http=$code body=$body"
}

# wait_for FILE TEXT TENTHS_OF_A_SECOND
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        [ $i -ge "$3" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# Two 1 MiB disk images that differ in their first 16 bytes.
for name in A B; do
    dd if=/dev/zero of=/tmp/disk-$name.img bs=1024 count=1024 2>/dev/null
    printf "WISP-DISK-$name-0001" | dd of=/tmp/disk-$name.img conv=notrunc 2>/dev/null
done

wisp --api-sock $SOCK > $GUEST_OUT 2> $WISP_ERR < /dev/null &
WISP=$!
i=0
while [ ! -S $SOCK ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done

api boot-source PUT /boot-source \
    "{\"kernel_image_path\":\"/guest/vmlinux-kbd\",\"initrd_path\":\"/guest/keyboard.cpio\",\"boot_args\":\"$CMDLINE\"}"
api drive PUT /drives/disk0 \
    '{"drive_id":"disk0","path_on_host":"/tmp/disk-A.img","is_root_device":false,"is_read_only":true}'
api machine-config PUT /machine-config '{"vcpu_count":1,"mem_size_mib":128}'
api start PUT /actions '{"action_type":"InstanceStart"}'
api start-again PUT /actions '{"action_type":"InstanceStart"}'
if wait_for $GUEST_OUT "WISP-L2 ready" 1500; then
    echo "API event guest-ready uptime=$(up)"
else
    echo "API event guest-not-ready uptime=$(up)"
fi
if wait_for $GUEST_OUT "WISP-L2 disk=WISP-DISK-A" 300; then
    echo "API event disk-A-seen uptime=$(up)"
fi
api drive-swap PATCH /drives/disk0 '{"drive_id":"disk0","path_on_host":"/tmp/disk-B.img"}'
if wait_for $GUEST_OUT "WISP-L2 disk=WISP-DISK-B" 300; then
    echo "API event disk-B-seen uptime=$(up)"
else
    echo "API event disk-B-not-seen uptime=$(up)"
fi
api pause PATCH /vm '{"state":"Paused"}'
api state-paused GET /
api resume PATCH /vm '{"state":"Resumed"}'
api state-resumed GET /
api vm-config GET /vm/config
echo "API event ctrl-alt-del-sent uptime=$(up)"
api ctrl-alt-del PUT /actions '{"action_type":"SendCtrlAltDel"}'
i=0
while kill -0 $WISP 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 $WISP 2>/dev/null; then
    echo "API event wisp-still-running uptime=$(up)"
    kill -9 $WISP
fi
wait $WISP
echo "API event wisp-exit rc=$? uptime=$(up)"
echo "--- guest console"
cat $GUEST_OUT
echo "--- wisp stderr"
cat $WISP_ERR

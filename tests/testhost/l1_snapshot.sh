# The scenario of tests/linux_snapshot.rs, run inside L1 as `sh /tmp/snapshot.sh CMDLINE VCPUS`.
#
# Boots the ticking Tinyx guest (l2_snapshot_init.sh) with `wisp --api-sock`, pauses it and
# takes PUT /snapshot/create, kills wisp, then restores the snapshot in a new `wisp --api-sock`
# (PUT /snapshot/load, resume_vm) and waits for the guest's next ticks. Prints
# `SNAP step=NAME http=STATUS` per request and `SNAP key=value` facts.
CMDLINE=$1
N=$2
D=/tmp/snap-$N
mkdir -p $D

# api SOCK STEP METHOD PATH BODY
api() {
    if [ -n "$5" ]; then
        code=$(/usr/bin/curl -sS --unix-socket "$1" -X "$3" -H 'Content-Type: application/json' \
            -d "$5" -o $D/body -w '%{http_code}' "http://localhost$4" 2>&1)
    else
        code=$(/usr/bin/curl -sS --unix-socket "$1" -X "$3" -o $D/body -w '%{http_code}' \
            "http://localhost$4" 2>&1)
    fi
    echo "SNAP step=$2 http=$code body=$(tr -d '\n ' < $D/body)"
}

# wait_for FILE PATTERN TENTHS_OF_A_SECOND
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        [ $i -ge "$3" ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# start_wisp NAME: a `wisp --api-sock` whose guest console goes to $D/NAME.out
start_wisp() {
    wisp --api-sock $D/$1.sock > $D/$1.out 2> $D/$1.err < /dev/null &
    WISP=$!
    i=0
    while [ ! -S $D/$1.sock ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
}

# The last whole tick line's tick and uptime: "TICK UPTIME".
last_tick() {
    sed -n 's/^WISP-L2 tick=\([0-9]*\) uptime=\([0-9.]*\) .*/\1 \2/p' "$1" | tail -n 1
}

start_wisp first
api $D/first.sock boot-source PUT /boot-source \
    "{\"kernel_image_path\":\"/guest/vmlinux\",\"initrd_path\":\"/guest/snapshot.cpio\",\"boot_args\":\"$CMDLINE\"}"
api $D/first.sock machine-config PUT /machine-config "{\"vcpu_count\":$N,\"mem_size_mib\":128}"
api $D/first.sock start PUT /actions '{"action_type":"InstanceStart"}'
wait_for $D/first.out "tick=3 " 3000 || echo "SNAP event=no-ticks-before"
api $D/first.sock pause PATCH /vm '{"state":"Paused"}'
api $D/first.sock create PUT /snapshot/create \
    "{\"snapshot_type\":\"Full\",\"snapshot_path\":\"$D/vm.state\",\"mem_file_path\":\"$D/vm.mem\"}"
kill -9 $WISP
wait $WISP 2>/dev/null
sleep 0.5
set -- $(last_tick $D/first.out)
echo "SNAP before-tick=$1 before-uptime=$2"
echo "SNAP before-nproc=$(sed -n 's/^WISP-L2 nproc=\([0-9]*\).*/\1/p' $D/first.out)"
# The snapshot sits on disk for a while: the restored guest's clock must not be confused.
sleep 2

start_wisp second
api $D/second.sock load PUT /snapshot/load \
    "{\"snapshot_path\":\"$D/vm.state\",\"mem_backend\":{\"backend_type\":\"File\",\"backend_path\":\"$D/vm.mem\"},\"resume_vm\":true}"
api $D/second.sock state GET /
# Two whole tick lines after the restore (the first may finish a line cut by the pause).
i=0
while [ "$(grep -c '^WISP-L2 tick=' $D/second.out)" -lt 2 ] && [ $i -lt 1200 ]; do
    sleep 0.1
    i=$((i + 1))
done
set -- $(sed -n 's/^WISP-L2 tick=\([0-9]*\) uptime=\([0-9.]*\) cpus=\([0-9]*\).*/\1 \2 \3/p' $D/second.out | head -n 2 | tr '\n' ' ')
echo "SNAP after-tick=$1 after-uptime=$2 after-cpus=$3 next-tick=$4 next-uptime=$5"
kill -9 $WISP
wait $WISP 2>/dev/null
echo "SNAP console-before:"
tail -n 5 $D/first.out
echo "SNAP console-after:"
head -n 5 $D/second.out
cat $D/second.err | tail -n 5

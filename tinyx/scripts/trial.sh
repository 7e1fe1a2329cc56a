# Run by `tinyx` as the first process of fresh network, PID and mount namespaces
# (`unshare --net --pid --mount --fork`): starts an image's application in a chroot of its
# tree, waits until it is ready (its port accepts a connection and the check command passes)
# or exits, and prints one verdict line "tinyx-trial: ready|exited STATUS|not-ready".
# When this shell ends, the kernel ends every process of the namespace.
# Arguments: ROOT PORT SECONDS CHECK TRACE LOG; the command is in $TINYX_RUN.
root=$1 port=$2 seconds=$3 check=$4 trace=$5 log=$6
ip link set lo up 2>/dev/null || busybox ifconfig lo 127.0.0.1 up
set --
[ -n "$trace" ] && set -- strace -f -qq -e trace=%file,execve -o "$trace"
(
    "$@" chroot "$root" /bin/busybox sh -c '
        export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
        /bin/busybox mount -t proc proc /proc 2>/dev/null
        cd / && exec /bin/busybox sh -c "$TINYX_RUN"' > "$log" 2>&1 < /dev/null &
    echo $! > "$log.pid"
    wait $!
    echo $? > "$log.status"
) &
i=0
n=$((seconds * 10))
state=not-ready
while [ "$i" -lt "$n" ]; do
    if [ -f "$log.status" ]; then
        echo "tinyx-trial: exited $(cat "$log.status")"
        exit 0
    fi
    ok=1
    if [ -n "$port" ]; then
        bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || ok=
    fi
    if [ -n "$ok" ] && [ -n "$check" ]; then
        TINYX_GUEST=127.0.0.1 sh -c "$check" > "$log.check" 2>&1 || ok=
    fi
    if [ -n "$ok" ] && { [ -n "$port" ] || [ -n "$check" ]; }; then
        state=ready
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
# Without a port or check, surviving the whole watch counts as ready.
[ -z "$port" ] && [ -z "$check" ] && [ ! -f "$log.status" ] && state=ready
# SIGTERM first, so that strace writes out its log before the namespace goes.
kill -TERM "$(cat "$log.pid")" 2>/dev/null
i=0
while [ ! -f "$log.status" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "tinyx-trial: $state"

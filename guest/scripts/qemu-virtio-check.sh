#!/usr/bin/env bash
# Boots the unikernel's virtio commands against QEMU's microvm devices (the peer) and, with
# WISP=path/to/wisp, against Wisp's own devices, and checks what the guest prints and what
# reaches the host (the disk file, frames on the tap, the vsock listener).
#
#   guest/scripts/qemu-virtio-check.sh [ELF]        (root: network namespaces and taps)
#   WISP=target/debug/wisp guest/scripts/qemu-virtio-check.sh
#
# Exit status 0 when every check passed; each failure is printed as `FAIL: ...`.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ELF=${1:-$ROOT/target/guest/x86_64-unknown-linux-gnu/release/wisp-unikernel}
WISP=${WISP:-}
WORK=$(mktemp -d)
NS=wispchk$$
TAP=wtap$$
failures=0
trap 'ip netns del $NS 2>/dev/null; rm -rf "$WORK"' EXIT

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect() { # expect LOG REGEX
    grep -Eq -- "$2" "$1" || fail "$(basename "$1"): no line matching '$2'"
}
make_disk() { # a 1 MiB image, sector 0 starts with bytes 0x10..0x1f
    python3 -c "
d = bytearray(1 << 20); d[0:16] = bytes(range(0x10, 0x20)); d[512:520] = b'ORIGINAL'
open('$1', 'wb').write(d)"
}
QEMU=(qemu-system-x86_64 -M microvm -accel kvm -cpu host,-arch-capabilities -m 128 -nodefaults
      -no-user-config -serial stdio -display none -no-reboot -device i8042
      -global virtio-mmio.force-legacy=false)
# QEMU puts the first device in the slot at 0xfeb02e00, the next at 0xfeb02c00, ...
SLOTS="virtio_mmio.device=512@0xfeb02e00:13 virtio_mmio.device=512@0xfeb02c00:12"

for vmm in qemu ${WISP:+wisp}; do
    echo "== $vmm"
    # Block (read-write) and rng.
    make_disk "$WORK/rw.img"
    log=$WORK/$vmm-blk.log
    if [ "$vmm" = qemu ]; then
        timeout 60 "${QEMU[@]}" -drive id=d0,file="$WORK/rw.img",format=raw,if=none \
            -device virtio-blk-device,drive=d0,serial=wispdisk -device virtio-rng-device \
            -kernel "$ELF" -append "blk rng $SLOTS" >"$log" 2>&1
    else
        timeout 60 "$WISP" run --kernel "$ELF" --disk path="$WORK/rw.img",id=wispdisk --rng \
            --cmdline "noxs blk rng" >"$log" 2>&1
        expect "$log" '^noxs: 2 devices$'
    fi
    expect "$log" '^blk: capacity=2048 sectors$'
    expect "$log" '^blk: id=wispdisk$'
    expect "$log" '^blk: sector0=101112131415161718191a1b1c1d1e1f$'
    expect "$log" '^blk: write ok$'
    expect "$log" '^rng: [0-9a-f]{64}$'
    expect "$log" '^rng: ok$'
    [ "$(dd if="$WORK/rw.img" bs=1 skip=512 count=23 2>/dev/null)" = wisp-unikernel-was-here ] ||
        fail "$vmm: the marker did not reach sector 1 of the disk file"

    # Block (read-only): the write must be refused and the file unchanged.
    make_disk "$WORK/ro.img"
    log=$WORK/$vmm-blk-ro.log
    if [ "$vmm" = qemu ]; then
        timeout 60 "${QEMU[@]}" -drive id=d0,file="$WORK/ro.img",format=raw,if=none,readonly=on \
            -device virtio-blk-device,drive=d0,serial=wispdisk -kernel "$ELF" \
            -append "blk $SLOTS" >"$log" 2>&1
    else
        timeout 60 "$WISP" run --kernel "$ELF" --disk path="$WORK/ro.img",ro,id=wispdisk \
            --cmdline "blk" >"$log" 2>&1
    fi
    expect "$log" '^blk: read-only$'
    expect "$log" '^blk: write rejected$'
    [ "$(dd if="$WORK/ro.img" bs=1 skip=512 count=8 2>/dev/null)" = ORIGINAL ] ||
        fail "$vmm: a read-only disk file changed"

    # Net: a tap in a namespace of our own, the host side at 10.0.2.1 answers ARP.
    ip netns add "$NS" && ip netns exec "$NS" ip tuntap add "$TAP" mode tap &&
        ip netns exec "$NS" ip addr add 10.0.2.1/24 dev "$TAP" &&
        ip netns exec "$NS" ip link set "$TAP" up || { fail "cannot create a tap"; continue; }
    host_mac=$(ip netns exec "$NS" cat /sys/class/net/"$TAP"/address)
    guest_mac=52:54:00:aa:bb:01
    net_boot() { # net_boot WORDS LOG
        if [ "$vmm" = qemu ]; then
            timeout 90 ip netns exec "$NS" "${QEMU[@]}" \
                -netdev tap,id=n0,ifname="$TAP",script=no,downscript=no \
                -device virtio-net-device,netdev=n0,mac=$guest_mac -kernel "$ELF" \
                -append "$1 $SLOTS" >"$2" 2>&1
        else
            timeout 90 ip netns exec "$NS" "$WISP" run --kernel "$ELF" \
                --net tap="$TAP",mac=$guest_mac --cmdline "$1" >"$2" 2>&1
        fi
    }
    log=$WORK/$vmm-net.log
    net_boot net "$log"
    expect "$log" "^net: mac=$guest_mac\$"
    expect "$log" "^net: arp reply from $host_mac\$"

    # net-echo: five test frames must come back with the MACs swapped, then `quit`.
    log=$WORK/$vmm-echo.log
    net_boot net-echo "$log" &
    boot_pid=$!
    for _ in $(seq 100); do grep -q '^net-echo: ready' "$log" 2>/dev/null && break; sleep 0.1; done
    ip netns exec "$NS" python3 - "$TAP" "$guest_mac" <<'PY' || fail "$vmm: net-echo frames"
import socket, sys
tap, guest = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((tap, 0x88b5))
me = s.getsockname()[4][:6]
s.settimeout(10)
for i in range(5):
    payload = b'wisp-echo-%d' % i + bytes(40)
    s.send(guest + me + b'\x88\xb5' + payload)
    while True:
        frame = s.recv(2048)
        if frame[6:12] == guest:
            break
    if frame[0:6] != me or frame[14:14 + len(payload)] != payload:
        sys.exit('bad echo: %r' % frame)
s.send(guest + me + b'\x88\xb5' + b'quit' + bytes(42))
PY
    wait "$boot_pid"
    expect "$log" '^net-echo: quit after [0-9]+ echoes$'
    ip netns del "$NS"

    # vsock: only Wisp here (QEMU needs the host's vhost_vsock module).
    if [ "$vmm" = wisp ]; then
        log=$WORK/wisp-vsock.log
        python3 - "$WORK/v.sock_1234" >"$WORK/vsock-host.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(10)
data = b''
while not data.endswith(b'\n'):
    chunk = c.recv(256)
    if not chunk:
        break
    data += chunk
print('host got', data)
c.sendall(b'hello from the host\n')
PY
        for _ in $(seq 50); do [ -S "$WORK/v.sock_1234" ] && break; sleep 0.1; done
        timeout 60 "$WISP" run --kernel "$ELF" --vsock cid=3,uds="$WORK/v.sock" \
            --cmdline "vsock" >"$log" 2>&1
        wait
        expect "$log" '^vsock: cid=3$'
        expect "$log" '^vsock: got hello from the host$'
        expect "$log" '^vsock: closed$'
        expect "$WORK/vsock-host.log" "host got b'hello from the unikernel\\\\n'"
    fi
    for f in "$WORK"/$vmm-*.log; do echo "--- $(basename "$f")"; cat "$f"; done
done
echo "failures: $failures"
[ "$failures" -eq 0 ]

#!/usr/bin/env bash
# Cold start of the Wisp unikernel with and without wisp-jailer, interleaved so both see the
# same machine load: from just before the process is started to its first console line
# ("hello from wisp unikernel"). Prints each variant's median, min and max in ms over N runs
# (default 20) and the load average before and after. Needs root, /dev/kvm and release builds:
#   cargo build --release --bin wisp --bin wisp-jailer
# $WISP picks another wisp (a static one: see docs/jailer.md); a dynamically linked one gets the
# host's libc bound into the jail read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
wisp=${WISP:-target/release/wisp}
jailer=target/release/wisp-jailer
kernel=$(pwd)/target/guest/x86_64-unknown-linux-gnu/release/wisp-unikernel
base=$(mktemp -d /tmp/wisp-jail-bench.XXXXXX)
trap 'rm -rf "$base"' EXIT
for f in "$wisp" "$jailer" "$kernel"; do [ -x "$f" ] || { echo "missing $f" >&2; exit 1; }; done

jail=(--exec-file "$wisp" --uid 10123 --gid 10123 --chroot-base-dir "$base"
      --bind "$kernel:/kernel:ro")
if ldd "$wisp" >/dev/null 2>&1; then
    jail+=(--bind /lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro --bind /lib64:/lib64:ro)
fi
limits=(--cgroup memory.max=536870912 --cgroup pids.max=64 --cgroup "cpu.max=100000 100000")
guest=(run --kernel /kernel --cmdline "")

# Runs "$@" and prints the microseconds until its first stdout line; waits for it to end.
first_line_us() {
    local t0 t1 line
    t0=$(date +%s%N)
    { IFS= read -r line; t1=$(date +%s%N); cat >/dev/null; } < <("$@" 2>&1)
    [[ $line == *"hello from wisp unikernel"* ]] || { echo "unexpected first line: $line" >&2; exit 1; }
    echo $(( (t1 - t0) / 1000 ))
}

declare -A samples
variants=(plain jail jail+cgroup)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$runs"); do
    for v in "${variants[@]}"; do
        case $v in
            plain) us=$(first_line_us "$wisp" run --kernel "$kernel" --cmdline "") ;;
            jail) us=$(first_line_us "$jailer" --id "b$i" "${jail[@]}" -- "${guest[@]}") ;;
            jail+cgroup) us=$(first_line_us "$jailer" --id "c$i" "${jail[@]}" "${limits[@]}" -- "${guest[@]}") ;;
        esac
        samples[$v]+="$us "
    done
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    sorted=$(printf '%s\n' ${samples[$v]} | sort -n)
    n=$(echo "$sorted" | wc -l)
    median=$(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p")
    printf '%-12s median %6.2f ms  min %6.2f  max %6.2f  (n=%d)\n' "$v" \
        "$(echo "$median / 1000" | bc -l)" "$(echo "$(echo "$sorted" | head -1) / 1000" | bc -l)" \
        "$(echo "$(echo "$sorted" | tail -1) / 1000" | bc -l)" "$n"
done

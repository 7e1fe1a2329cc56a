#!/usr/bin/env bash
# Bounded coverage-guided fuzz run of every target of both cargo-fuzz projects: the API's
# (api/fuzz: request parser, JSON models) and the guest-facing one here (fuzz/: virtio devices
# over hostile rings, the virtio-mmio register file, the i8042, the kernel loader, the control
# page reader). scripts/test.sh runs it; also by hand.
# Usage: fuzz/run.sh [seconds-per-target]   (default 60)
#
# cargo-fuzz builds with sanitizer flags that only nightly rustc accepts. A nightly toolchain
# is used when rustup has one; otherwise the installed stable rustc is told to accept them
# (RUSTC_BOOTSTRAP=1: no nightly can be downloaded where only crates.io is reachable). Installs
# cargo-fuzz from crates.io if it is missing. Both projects build into one target directory
# (fuzz/target), so the dependencies they share compile once. New inputs go to
# <project>/corpus/<target> (ignored by git); the checked-in seeds/<target> stay as they are.
# A crash leaves its input in <project>/artifacts/<target> and makes this script fail.
# The virtio_net target needs root: it opens a tap in a private network namespace.
set -euo pipefail
secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --quiet --locked cargo-fuzz
fi
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
target_dir="$root/fuzz/target"
mkdir -p "$target_dir"
for project in api/fuzz fuzz; do
    cd "$root/$project"
    for target in $("${fuzz[@]}" list); do
        mkdir -p "corpus/$target"
        log="$target_dir/fuzz-$target.log"
        if ! "${fuzz[@]}" run --target-dir "$target_dir" "$target" "corpus/$target" \
            "seeds/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 \
            -print_final_stats=1 >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "fuzz: $target failed (a crash leaves its input in $project/artifacts/$target)" >&2
            exit 1
        fi
        echo "fuzz: $project $target: $(grep -E '^Done' "$log" | tail -n 1), no crash" >&2
    done
done

#!/usr/bin/env bash
# Bounded coverage-guided fuzz run of every target (scripts/test.sh runs it; also by hand).
# Usage: api/fuzz/run.sh [seconds-per-target]   (default 60)
#
# cargo-fuzz builds with sanitizer flags that only nightly rustc accepts. A nightly toolchain
# is used when rustup has one; otherwise the installed stable rustc is told to accept them
# (RUSTC_BOOTSTRAP=1: no nightly can be downloaded where only crates.io is reachable). Installs
# cargo-fuzz from crates.io if it is missing. New inputs go to corpus/<target> (ignored by git);
# the checked-in seeds/<target> stay as they are. A crash leaves its input in
# artifacts/<target> and makes this script fail.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")"
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
mkdir -p target
for target in $("${fuzz[@]}" list); do
    mkdir -p "corpus/$target"
    log="target/fuzz-$target.log"
    if ! "${fuzz[@]}" run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target failed (a crash leaves its input in api/fuzz/artifacts/$target)" >&2
        exit 1
    fi
    echo "fuzz: $target: $(grep -E '^Done' "$log" | tail -n 1), no crash" >&2
done

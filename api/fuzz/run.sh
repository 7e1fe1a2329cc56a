#!/usr/bin/env bash
# Bounded coverage-guided fuzz run of every target (for CI or by hand).
# Usage: api/fuzz/run.sh [seconds-per-target]   (default 60)
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). New inputs go to
# corpus/<target> (ignored by git); the checked-in seeds/<target> stay as they are.
# A crash leaves its input in artifacts/<target> and makes this script fail.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")"
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
done

#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the workspace,
# including the end-to-end ones that boot real guests on /dev/kvm, the Tinyx kernel under
# QEMU TCG and Linux guests inside the real-KVM test host, and finally a bounded
# coverage-guided fuzz run of both cargo-fuzz projects (fuzz/run.sh: the API's request parser
# and JSON models, and every guest-facing input; $WISP_FUZZ_SECS seconds per target, default
# 20). Arguments go to `cargo test` and skip the fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-targets "$@"
if [ $# -eq 0 ]; then
    fuzz/run.sh "${WISP_FUZZ_SECS:-20}"
fi

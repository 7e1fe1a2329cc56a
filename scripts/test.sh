#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the workspace,
# including the end-to-end ones that boot real guests on /dev/kvm, the Tinyx kernel under
# QEMU TCG and Linux guests inside the real-KVM test host.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo test --workspace --all-targets "$@"

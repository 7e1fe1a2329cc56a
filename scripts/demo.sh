#!/usr/bin/env bash
# Boots the demo microVM: the Wisp unikernel on PVM KVM, the Tinyx Linux guest on hardware KVM
# (built on first use). Installs what the Linux demo needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -d /sys/module/kvm_pvm ]; then scripts/install-deps.sh; fi
cargo build --release --bin wisp
cargo build --release -p wisp-tinyx --bin tinyx   # builds the Linux demo guest (not linked into wisp)
exec target/release/wisp demo

#!/usr/bin/env bash
# Installs the Debian packages Wisp's demo, tests and benchmarks use, only those missing.
# QEMU (TCG boot oracle for Tinyx, the real-KVM test host, the peer VMM in benchmarks),
# busybox-static and cpio (initramfs), the kernel source and its build tools (Tinyx),
# curl (REST API tests), iproute2 (network namespaces and taps), kmod/xz/zstd (test host),
# e2fsprogs (ext4 images for the Linux virtio-blk tests).
set -euo pipefail
packages=(qemu-system-x86 busybox-static cpio linux-source-6.12 build-essential flex bison bc
          libelf-dev libssl-dev curl iproute2 kmod xz-utils zstd e2fsprogs)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

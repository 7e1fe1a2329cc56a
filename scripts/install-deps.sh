#!/usr/bin/env bash
# Installs the Debian packages Wisp's demo, tests and benchmarks use, only those missing.
# QEMU (TCG boot oracle for Tinyx, the real-KVM test host, the peer VMM in benchmarks),
# busybox-static and cpio (initramfs), the kernel source and its build tools (Tinyx),
# curl and netcat-openbsd (REST API tests; `nc -N -U` half-closes), iproute2 (network
# namespaces and taps), kmod/xz/zstd (test host), e2fsprogs (ext4 images for the Linux
# virtio-blk tests), acpica-tools (`iasl -d` disassembles the DSDT in wisp-vmm's tests),
# libseccomp-dev and libcap-ng-dev (to build virtiofsd, the vhost-user backend of the
# virtio-fs tests), redis-tools and strace (Tinyx application images).
#
# virtiofsd (crates.io) is installed with `cargo install --locked` into
# ~/.cache/wisp/virtiofsd/bin when neither that copy nor one on PATH exists; tests look there.
#
# QEMU comes from bookworm-backports (10.x): Debian 12's own QEMU 7.2 leaves an L1 CPU of the
# nested-SVM test host stuck in L2 in about one boot of three; 10.x does not. The suite is
# added with the mirror the main suite already uses; a machine whose QEMU is >= 10 skips it.
set -euo pipefail
packages=(busybox-static cpio linux-source-6.12 build-essential flex bison bc
          libelf-dev libssl-dev curl netcat-openbsd iproute2 kmod xz-utils zstd e2fsprogs
          acpica-tools libseccomp-dev libcap-ng-dev)
# Tinyx application images (tests/linux_tinyx_app.rs): redis-cli talks to the redis guest,
# strace records the files a trial run opens (tinyx minimize-image).
packages+=(redis-tools strace)
export DEBIAN_FRONTEND=noninteractive
updated=
apt_update() { [ -n "$updated" ] || { apt-get update -q >/dev/null; updated=1; }; }

qemu_major() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo 0; return; }
    qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'
}

if [ "$(qemu_major)" -lt 10 ]; then
    list=/etc/apt/sources.list.d/wisp-bookworm-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        mirror=$(sed -n 's/^URIs:[[:space:]]*\(.*debian\/\?\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        [ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(\S*debian\/\?\)[[:space:]]\+bookworm[[:space:]].*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        echo "install-deps: adding bookworm-backports ($mirror) for QEMU 10" >&2
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" > "$list"
    fi
    apt_update
    echo "install-deps: installing qemu-system-x86 from bookworm-backports" >&2
    apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    major=$(qemu_major)
    if [ "$major" -lt 10 ]; then
        echo "install-deps: QEMU $major installed, 10 or later needed" >&2
        exit 1
    fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  apt_update
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# virtiofsd: built once per machine (a few minutes), then found in the cache.
virtiofsd_root="${HOME}/.cache/wisp/virtiofsd"
if [ ! -x "$virtiofsd_root/bin/virtiofsd" ] && ! command -v virtiofsd >/dev/null 2>&1; then
    echo "install-deps: building virtiofsd into $virtiofsd_root" >&2
    cargo install --locked --quiet virtiofsd --root "$virtiofsd_root"
fi

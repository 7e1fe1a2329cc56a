//! The ioctl request numbers the filters allow, by name, computed from the kernel's `_IOC`
//! encoding and the `kvm-bindings` structures they carry (so a size can never be typed
//! wrong). The numbers match Linux's uapi headers (`linux/kvm.h`, `asm-generic/ioctls.h`).

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

/// KVM's ioctl type byte (`KVMIO`).
const KVMIO: u32 = 0xAE;

/// The size of `T` as the `_IOC` size field holds it (the structures are a few hundred bytes
/// at most, far below the field's 14 bits).
const fn size_of<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// One ioctl a filter allows: its name (for the docs and error messages) and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioctl {
    pub name: &'static str,
    pub number: u64,
}

/// `KVM_RUN`: enter the guest (vCPU fd).
pub const KVM_RUN: Ioctl = Ioctl {
    name: "KVM_RUN",
    number: ioctl_expr(_IOC_NONE, KVMIO, 0x80, 0),
};

/// `KVM_GET_REGS`: read a vCPU's registers (the RIP in a triple-fault report).
pub const KVM_GET_REGS: Ioctl = Ioctl {
    name: "KVM_GET_REGS",
    number: ioctl_expr(_IOC_READ, KVMIO, 0x81, size_of::<kvm_regs>()),
};

/// `KVM_SET_USER_MEMORY_REGION`: teardown removes the guest's memory slots before unmapping.
pub const KVM_SET_USER_MEMORY_REGION: Ioctl = Ioctl {
    name: "KVM_SET_USER_MEMORY_REGION",
    number: ioctl_expr(
        _IOC_WRITE,
        KVMIO,
        0x46,
        size_of::<kvm_userspace_memory_region>(),
    ),
};

/// `FIONBIO`: make a socket non-blocking (vsock streams accepted from the host).
pub const FIONBIO: Ioctl = Ioctl {
    name: "FIONBIO",
    number: libc::FIONBIO,
};

/// `TCGETS`: read the terminal's settings (`wisp run`'s raw console).
pub const TCGETS: Ioctl = Ioctl {
    name: "TCGETS",
    number: libc::TCGETS,
};

/// `TCSETS`: restore the terminal's settings when `wisp run` ends.
pub const TCSETS: Ioctl = Ioctl {
    name: "TCSETS",
    number: libc::TCSETS,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers Linux's headers give (x86_64), so the encoding above is checked against
    /// an independent source rather than against itself.
    #[test]
    fn numbers_match_the_kernel_headers() {
        assert_eq!(KVM_RUN.number, 0xAE80);
        assert_eq!(KVM_GET_REGS.number, 0x8090_AE81);
        assert_eq!(KVM_SET_USER_MEMORY_REGION.number, 0x4020_AE46);
        assert_eq!(FIONBIO.number, 0x5421);
        assert_eq!(TCGETS.number, 0x5401);
        assert_eq!(TCSETS.number, 0x5402);
    }
}

//! The ioctls a snapshot needs once the filters are on: a vCPU thread reads its own state
//! (`VcpuEvent::SaveState`), the VMM thread reads KVM's MSR list and the VM's irqchip, PIT and
//! clock, and KVM's dirty page log (diff snapshots). Restores happen before the filters go
//! on (the state is set on a VM that has not run).

use crate::ioctls::Ioctl;
use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_dirty_log, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_list, kvm_msrs, kvm_pit_state2, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use vmm_sys_util::ioctl::{ioctl_expr, _IOC_NONE, _IOC_READ, _IOC_WRITE};

const KVMIO: u32 = 0xAE;

const fn ior<T>(name: &'static str, nr: u32) -> Ioctl {
    Ioctl {
        name,
        number: ioctl_expr(_IOC_READ, KVMIO, nr, std::mem::size_of::<T>() as u32),
    }
}

const fn iow<T>(name: &'static str, nr: u32) -> Ioctl {
    Ioctl {
        name,
        number: ioctl_expr(_IOC_WRITE, KVMIO, nr, std::mem::size_of::<T>() as u32),
    }
}

const fn iowr<T>(name: &'static str, nr: u32) -> Ioctl {
    Ioctl {
        name,
        number: ioctl_expr(
            _IOC_READ | _IOC_WRITE,
            KVMIO,
            nr,
            std::mem::size_of::<T>() as u32,
        ),
    }
}

/// What a paused vCPU thread reads for a snapshot.
pub const VCPU_SAVE_IOCTLS: &[Ioctl] = &[
    ior::<kvm_sregs>("KVM_GET_SREGS", 0x83),
    ior::<kvm_xsave>("KVM_GET_XSAVE", 0xa4),
    ior::<kvm_xcrs>("KVM_GET_XCRS", 0xa6),
    ior::<kvm_debugregs>("KVM_GET_DEBUGREGS", 0xa1),
    ior::<kvm_lapic_state>("KVM_GET_LAPIC", 0x8e),
    ior::<kvm_mp_state>("KVM_GET_MP_STATE", 0x98),
    ior::<kvm_vcpu_events>("KVM_GET_VCPU_EVENTS", 0x9f),
    iowr::<kvm_msrs>("KVM_GET_MSRS", 0x88),
    Ioctl {
        name: "KVM_GET_TSC_KHZ",
        number: ioctl_expr(_IOC_NONE, KVMIO, 0xa3, 0),
    },
];

/// What the VMM thread reads for a snapshot.
pub const VMM_SAVE_IOCTLS: &[Ioctl] = &[
    iowr::<kvm_msr_list>("KVM_GET_MSR_INDEX_LIST", 0x02),
    iowr::<kvm_irqchip>("KVM_GET_IRQCHIP", 0x62),
    ior::<kvm_pit_state2>("KVM_GET_PIT2", 0x9f),
    ior::<kvm_clock_data>("KVM_GET_CLOCK", 0x7c),
    // Diff snapshots (and the Full snapshot that empties the log under one).
    iow::<kvm_dirty_log>("KVM_GET_DIRTY_LOG", 0x42),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn number(list: &[Ioctl], name: &str) -> u64 {
        list.iter().find(|i| i.name == name).unwrap().number
    }

    /// Linux's headers (x86_64), an independent source for the encoding above.
    #[test]
    fn numbers_match_the_kernel_headers() {
        assert_eq!(number(VCPU_SAVE_IOCTLS, "KVM_GET_SREGS"), 0x8138_AE83);
        assert_eq!(number(VCPU_SAVE_IOCTLS, "KVM_GET_XSAVE"), 0x9000_AEA4);
        assert_eq!(number(VCPU_SAVE_IOCTLS, "KVM_GET_LAPIC"), 0x8400_AE8E);
        assert_eq!(number(VCPU_SAVE_IOCTLS, "KVM_GET_MSRS"), 0xC008_AE88);
        assert_eq!(number(VCPU_SAVE_IOCTLS, "KVM_GET_TSC_KHZ"), 0xAEA3);
        assert_eq!(
            number(VMM_SAVE_IOCTLS, "KVM_GET_MSR_INDEX_LIST"),
            0xC004_AE02
        );
        assert_eq!(number(VMM_SAVE_IOCTLS, "KVM_GET_IRQCHIP"), 0xC208_AE62);
        assert_eq!(number(VMM_SAVE_IOCTLS, "KVM_GET_CLOCK"), 0x8030_AE7C);
        assert_eq!(number(VMM_SAVE_IOCTLS, "KVM_GET_DIRTY_LOG"), 0x4010_AE42);
    }
}
